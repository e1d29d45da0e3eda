"""The field of view of a fundus photograph as a transform: the dataset's mask binarised, or the disc-shaped region
:func:`~iternet_monai.data.field_of_view.derive_field_of_view` finds in the photograph's colours where the item has
none."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from iternet_monai.data.field_of_view import derive_field_of_view
from iternet_monai.transforms.fundus import source_name

__all__ = ["FieldOfViewd"]


class FieldOfViewd(MapTransform):
    """Binarise the field-of-view mask at 0.5, or derive it from the image when the item has none
    (:func:`derive_field_of_view`). The mask's metadata (a MetaTensor's ``meta["fov_source"]``) says which: the
    dataset mask, or the derivation with its threshold."""

    def __init__(self, keys: KeysCollection = "mask", image_key: str = "image"):
        super().__init__(keys, allow_missing_keys=True)
        self.image_key = image_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.keys:
            if key in d:
                d[key] = d[key] > 0.5
                source = f"dataset mask {source_name(d, key)}"
            else:
                image = d[self.image_key]
                fov, source = derive_field_of_view(image.detach().cpu().numpy() if torch.is_tensor(image) else image)
                d[key] = torch.as_tensor(fov[None]) if torch.is_tensor(image) else fov[None]
                if isinstance(image, MetaTensor):
                    d[key] = MetaTensor(d[key], meta=dict(image.meta))
            d[key] = d[key].float() if torch.is_tensor(d[key]) else d[key].astype(np.float32)
            if isinstance(d[key], MetaTensor):
                d[key].meta["fov_source"] = source
        return d
