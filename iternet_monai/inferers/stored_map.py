"""An inferer that returns saved maps instead of running a network, so that any method's probability maps are
scored by the same evaluator, postprocessing and handlers as this project's model.

Ours: MONAI's inferers all run the network they are given; evaluating another method's maps needs one that looks up
the map of the image being evaluated (by its metadata ``filename_or_obj``) and ignores the network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer

from iternet_monai.data.maps import EvaluationError, check_maps, read_probability_map
from iternet_monai.utils.errors import optional
from iternet_monai.utils.files import file_stem

__all__ = ["BINARY_NOTE", "StoredMapInferer", "stored_maps_or"]

logger = logging.getLogger(__name__)
BINARY_NOTE = (
    "AUC and PR AUC of a binary map are those of its one operating point (a two-step curve), not a ranking of "
    "vessel probabilities; compare them only with other binary maps"
)


def _key(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


class StoredMapInferer(Inferer):
    """Return, for every image of a batch, its saved probability map from ``folder`` as a (1, W, H) float32 tensor
    (MONAI's orientation), found through the image's metadata ``filename_or_obj``; the network is not called.

    Every item's map is matched and checked when the inferer is made (:func:`~iternet_monai.data.maps.check_maps`),
    so all images without a usable map are named in one message before anything is scored. Binary maps (only 0 and
    1, or 0 and 255) are read as 0/1 and logged with a note; :attr:`description` records what was read for
    ``metrics.json``.

    Args:
        items: the datalist items to be evaluated (their ``image`` paths).
        folder: the folder of maps, matched to the images by file stem.
    """

    def __init__(self, items: Sequence[dict], folder: str | Path) -> None:
        super().__init__()
        maps, is_binary = check_maps(items, folder)
        self.maps = {_key(image): path for image, path in maps.items()}
        binary = [maps[image].name for image, flag in is_binary.items() if flag]
        if binary:
            logger.info(f"{len(binary)} binary map(s) (only 0 and 1, or 0 and 255), read as 0/1: {', '.join(binary)}")
            logger.info(f"note: {BINARY_NOTE}")
        self.description = {
            "maps": str(folder),
            "files": {file_stem(image): path.name for image, path in maps.items()},
            "binary_maps": binary,
            **({"binary_note": BINARY_NOTE} if binary else {}),
        }

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any] | None = None, *args: Any, **kwargs: Any):
        """The stored maps of the images of ``inputs`` (B, C, W, H), a MONAI MetaTensor, as (B, 1, W, H)."""
        names = getattr(inputs, "meta", {}).get("filename_or_obj")
        if names is None:
            raise EvaluationError("stored maps are found through the image's filename_or_obj; the input has none")
        names = [names] if isinstance(names, (str, Path)) else list(names)
        arrays = []
        for name in names:
            path = self.maps.get(_key(name))
            if path is None:
                raise EvaluationError(f"{name}: no stored map was checked for this image")
            arrays.append(torch.as_tensor(read_probability_map(path).T, dtype=torch.float32)[None])
        return torch.stack(arrays).to(inputs.device)


def stored_maps_or(inferer: Inferer | None, folder: str | Path | None, items: Sequence[dict]) -> Inferer:
    """The evaluator's inferer: the saved maps of ``folder`` (a :class:`StoredMapInferer` of ``items``) when a
    folder is given, else ``inferer``, the model's.

    Args:
        inferer: the model's inferer (None where the config disabled it because maps are scored).
        folder: the folder of saved maps, or None.
        items: the datalist items to be evaluated.
    """
    folder = optional(folder)
    if folder is None:
        if inferer is None:
            raise EvaluationError("no inferer: give a folder of saved maps (predictions) or enable the model's inferer")
        return inferer
    return StoredMapInferer(items, folder)
