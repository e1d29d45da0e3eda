"""Fundus-specific transforms. Everything else in the pipelines is a stock MONAI transform; these exist only
where MONAI has none: PIL converters for fundus files, an input check that names the file, labels read by their
values and the original code's saturation jitter. The field of view is :mod:`.field_of_view`'s."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ImageReader, NibabelReader, PILReader
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    RandomizableTransform,
    ScaleIntensityRanged,
)
from PIL import Image

from iternet_monai.utils.errors import InputError

__all__ = [
    "to_rgb",
    "to_gray",
    "source_name",
    "CheckFundusd",
    "label_values",
    "LabelValuesd",
    "DropSingletonDepthd",
    "LoadLabelsd",
    "RandSaturationd",
    "LoadFundusd",
    "fundus_loading",
    "GroundTruthRoundTripd",
]

# The released code's "grey" weights, applied in RGB order (BGR luma weights on RGB data, a quirk kept on purpose).
GREY_WEIGHTS = (0.114, 0.587, 0.299)

logger = logging.getLogger(__name__)


def to_rgb(image: Image.Image) -> Image.Image:
    """PILReader converter for photographs: palette, RGBA and CMYK become RGB; grey stays grey so it can be refused."""
    return image.convert("RGB") if image.mode in ("P", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX") else image


def to_gray(image: Image.Image) -> Image.Image:
    """PILReader converter for labels and masks: palette GIFs, 1-bit PNGs and colour files become 8-bit grey
    levels (DRIVE's 2nd-observer GIFs, palette indices 0/1, become the grey levels of their colours, 3/253), which
    :class:`LabelValuesd` then reads by value."""
    return image.convert("L")


def source_name(data: Mapping, key: Hashable) -> str:
    """The file an item was loaded from (MONAI metadata), or the key when it was not loaded from a file."""
    meta = getattr(data.get(key), "meta", None) or {}
    return str(meta.get("filename_or_obj", f"<{key}>"))


class CheckFundusd(MapTransform):
    """Refuse inputs the network cannot use, naming the file: an image without 3 channels, or a label/mask whose
    size differs from its image's. Runs after ``EnsureChannelFirstd``."""

    def __init__(self, keys: KeysCollection = ("label", "mask"), image_key: str = "image", channels: int = 3):
        super().__init__(keys, allow_missing_keys=True)
        self.image_key = image_key
        self.channels = channels

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        image = d[self.image_key]
        if image.shape[0] != self.channels:
            kind = "a grayscale" if image.shape[0] == 1 else f"a {image.shape[0]}-channel"
            raise InputError(
                f"{source_name(d, self.image_key)}: {kind} image; IterNet needs {self.channels}-channel RGB photographs"
            )
        for key in self.key_iterator(d):
            if tuple(d[key].shape[1:]) != tuple(image.shape[1:]):
                raise InputError(
                    f"{source_name(d, key)}: {key} size {tuple(d[key].shape[1:])} differs from its image "
                    f"{source_name(d, self.image_key)} {tuple(image.shape[1:])}"
                )
        return d


class RandSaturationd(RandomizableTransform, MapTransform):
    """The released code's saturation jitter: ``img <- clip(a*img + (1-a)*grey, 0, 1)`` per pixel, with
    ``a = 1 + U(-factor, factor)``. MONAI has brightness and contrast transforms but no saturation one."""

    def __init__(
        self,
        keys: KeysCollection = "image",
        factor: float = 0.2,
        prob: float = 0.5,
        weights: Sequence[float] = GREY_WEIGHTS,
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.factor = factor
        self.weights = tuple(weights)
        self.alpha = 1.0

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self.alpha = 1.0 + self.R.uniform(-self.factor, self.factor)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = d[key]
            grey = sum(w * image[c] for c, w in enumerate(self.weights))
            d[key] = (self.alpha * image + (1.0 - self.alpha) * grey[None]).clip(0.0, 1.0)
        return d


def label_values(levels: torch.Tensor) -> tuple[torch.Tensor, str | None]:
    """Read 8-bit grey levels of a label or FoV mask by their values, not by their min and max (one stray 255 in a
    0/1 label would make every vessel 1/255). Returns the values in [0, 1] and, where the file fits no rule,
    what was done (for a warning that names the file). The rules:

    - two values (0/1, 0/255, 1-bit, a two-colour palette): binary, the brighter one is vessel (inside the FoV);
    - more than two values, the largest 128 or more, and fewer pixels of value 1 than above 1: a soft label, value
      / 255 (an anti-aliased, resized, JPEG-compressed or observer-averaged label);
    - anything else (a 0/1 label with stray other values, only values below 128): binary, every value above the
      smallest is vessel, with a note;
    - a single value: all 0 (empty) or all 1, with a note.
    """
    values, counts = torch.unique(levels, return_counts=True)
    if len(values) == 1:
        level = float(values[0])
        note = "empty: every pixel is 0" if level == 0 else f"every pixel is {level:g}: read as all 1"
        return torch.full_like(levels, float(level > 0)), note
    if len(values) == 2:
        return (levels == values[1]).to(levels.dtype), None
    ones, above_one = counts[values == 1].sum(), counts[values > 1].sum()
    if values[-1] >= 128 and ones <= above_one:
        return levels / 255.0, None
    shown = ", ".join(f"{v:g}" for v in values[:6].tolist()) + (", ..." if len(values) > 6 else "")
    why = (
        f"a 0/1 file with {int(above_one)} pixels of other values"
        if ones > above_one
        else "more than two values, all below 128"
    )
    smallest = float(values[0])
    return (levels > smallest).to(levels.dtype), f"{why} (values {shown}): read every value above {smallest:g} as 1"


class LabelValuesd(MapTransform):
    """Scale labels and FoV masks to [0, 1] by :func:`label_values`, and log a warning naming the file when one is
    empty or fits no rule. Ours because MONAI's intensity transforms scale by a fixed range or the image's own
    min and max; none reads a label by its file's value convention."""

    def __init__(self, keys: KeysCollection = ("label", "mask")) -> None:
        super().__init__(keys, allow_missing_keys=True)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            values, note = label_values(torch.as_tensor(d[key]))
            if note:
                logger.warning(f"{source_name(d, key)}: {key} {note}")
            d[key] = values if torch.is_tensor(d[key]) else values.numpy()
        return d


class DropSingletonDepthd(MapTransform):
    """Drop the singleton third axis of 2-D labels saved as NIfTI volumes, ``(1, W, H, 1)`` after loading: 3D
    Slicer writes a labelmap of a photograph that way (MONAI Label's default upload), with its first axis along the
    image's width as MONAI reads PNGs, so the label then matches its photograph pixel for pixel. Ours because
    MONAI's ``SqueezeDimd`` refuses a dimension that is not 1, which a PNG label's height is."""

    def __init__(self, keys: KeysCollection = ("label", "mask")) -> None:
        super().__init__(keys, allow_missing_keys=True)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].ndim == 4 and d[key].shape[-1] == 1:
                d[key] = d[key][..., 0]
        return d


class LoadLabelsd(LoadImaged):
    """Load labels and FoV masks with the reader their file name calls for: NIfTI (``.nii``, ``.nii.gz``, as 3D
    Slicer writes a labelmap) with Nibabel, any other file as a picture with PIL, as grey levels (:func:`to_gray`).
    Ours because MONAI's ``LoadImaged`` given both readers tries them in turn, Nibabel first on every GIF and PNG,
    and logs an "unable to load" line for each file that then loads fine."""

    def __init__(self, keys: KeysCollection = ("label", "mask")) -> None:
        self.picture, self.nifti = PILReader(converter=to_gray), NibabelReader()
        super().__init__(keys, reader=self.picture, image_only=True, allow_missing_keys=True)

    def __call__(self, data: Mapping, reader: ImageReader | None = None) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            chosen = reader or (self.nifti if self.nifti.verify_suffix(str(d[key])) else self.picture)
            d.update(super().__call__({key: d[key]}, chosen))
        return d


class LoadFundusd(Compose):
    """The one loading pipeline of every config and command: PIL reads photographs (palette, RGBA handled), labels
    and masks are read from images (palette GIFs, 1-bit PNGs) or 2-D NIfTI (as 3D Slicer writes them), then
    channel-first, the input check that names the file, the image scaled from 8 bits to [0, 1] as the released code
    does, labels and masks read by their values (:func:`label_values`). Missing label/mask keys are fine.

    Args:
        keys: the photograph ``"image"`` and any of ``"label"``, ``"mask"`` to load with it.
    """

    def __init__(self, keys: Sequence[str] = ("image", "label", "mask")) -> None:
        others = [k for k in keys if k != "image"]
        steps: list = [LoadImaged("image", reader="PILReader", converter=to_rgb, image_only=True)]
        if others:
            steps.append(LoadLabelsd(others))
        steps.append(EnsureChannelFirstd(list(keys), allow_missing_keys=True))
        if others:
            steps.append(DropSingletonDepthd(others))
        steps += [
            CheckFundusd(others or ("label", "mask")),
            ScaleIntensityRanged("image", a_min=0, a_max=255, b_min=0.0, b_max=1.0, clip=True),
        ]
        if others:
            steps.append(LabelValuesd(others))
        super().__init__(steps)


def fundus_loading(keys: Sequence[str] = ("image", "label", "mask")) -> list:
    """The steps of :class:`LoadFundusd` as a list, to put in front of other transforms in code."""
    return list(LoadFundusd(keys).transforms)


class GroundTruthRoundTripd(MapTransform):
    """The released code's evaluation ground truth: the label resized to ``size`` x ``size`` (576 DRIVE, 960
    CHASE_DB1, 592 STARE; scikit-image bilinear with anti-aliasing), resized back and thresholded at 0.5. Only for
    exact parity with the paper's tables; the default protocol scores against the label file itself."""

    def __init__(self, keys: KeysCollection = "label", size: int = 576) -> None:
        super().__init__(keys)
        self.size = size

    def __call__(self, data: Mapping) -> dict:
        from skimage.transform import resize

        d = dict(data)
        for key in self.key_iterator(d):
            label = np.asarray(d[key][0], dtype=np.float64)
            square = resize(label, (self.size, self.size), order=1, mode="reflect", anti_aliasing=True)
            back = resize(square, label.shape, order=1, mode="reflect", anti_aliasing=True) > 0.5
            d[key] = torch.as_tensor(back[None], dtype=torch.float32)
        return d
