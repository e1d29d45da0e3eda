"""Fundus-specific transforms. Everything else in the pipelines is a stock MONAI transform; these exist only
where MONAI has none: PIL converters for fundus files, an input check that names the file, a field-of-view mask
derived by thresholding, and the original code's saturation jitter."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    RandomizableTransform,
    ScaleIntensityd,
    ScaleIntensityRanged,
)
from PIL import Image
from scipy import ndimage

__all__ = [
    "to_rgb",
    "to_gray",
    "source_name",
    "CheckFundusd",
    "FieldOfViewd",
    "derive_field_of_view",
    "RandSaturationd",
    "fundus_loading",
]

# The released code's "grey" weights, applied in RGB order (BGR luma weights on RGB data, a quirk kept on purpose).
GREY_WEIGHTS = (0.114, 0.587, 0.299)


def to_rgb(image: Image.Image) -> Image.Image:
    """PILReader converter for photographs: palette, RGBA and CMYK become RGB; grey stays grey so it can be refused."""
    return image.convert("RGB") if image.mode in ("P", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX") else image


def to_gray(image: Image.Image) -> Image.Image:
    """PILReader converter for labels and masks: palette GIFs and 1-bit PNGs become 8-bit grey levels."""
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
            raise ValueError(
                f"{source_name(d, self.image_key)}: {kind} image; IterNet needs {self.channels}-channel RGB photographs"
            )
        for key in self.key_iterator(d):
            if tuple(d[key].shape[1:]) != tuple(image.shape[1:]):
                raise ValueError(
                    f"{source_name(d, key)}: {key} size {tuple(d[key].shape[1:])} differs from its image "
                    f"{source_name(d, self.image_key)} {tuple(image.shape[1:])}"
                )
        return d


# Field-of-view derivation (see derive_field_of_view); on [0, 1] images, sizes as fractions of the shorter side.
FOV_MEDIAN_SIZE = 5  # median filter (pixels) against sensor noise and JPEG blocks
FOV_MIN_MARGIN = 0.03  # the FoV is at least this much brighter than the surround (8 of 255)
FOV_NOISE_FACTOR = 6.0  # ... and this many robust standard deviations of the surround's noise
FOV_SURROUND_LEVEL = 0.1  # a darker Otsu class brighter than this is not a surround: the whole image is the FoV
FOV_OPENING = 0.01  # opening disc radius (cuts bridges to noise)
FOV_BAND = 0.03  # the surround's level is measured this far outside the first mask ...
FOV_SMOOTHING = 0.05  # ... and smoothed over this scale (Gaussian sigma), so an uneven surround is followed


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def _disc_opening(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary opening by a Euclidean disc, through distance transforms (exact discs of any radius, at the cost of
    two distance transforms instead of a large structuring element)."""
    eroded = ndimage.distance_transform_edt(mask) > radius
    return ndimage.distance_transform_edt(~eroded) <= radius


def _one_region(mask: np.ndarray, radius: float) -> np.ndarray:
    return ndimage.binary_fill_holes(_largest_component(_disc_opening(mask, radius)))


def _surround_level(smooth: np.ndarray, surround: np.ndarray, sigma: float) -> np.ndarray:
    """The surround's brightness everywhere: a Gaussian average of the ``surround`` pixels only (normalised
    convolution), computed on a grid ``sigma / 4`` coarser and interpolated back."""
    step = max(1, int(sigma // 4))
    cropped = (smooth.shape[0] // step * step, smooth.shape[1] // step * step)

    def coarse(array: np.ndarray) -> np.ndarray:
        blocks = array[: cropped[0], : cropped[1]].reshape(cropped[0] // step, step, cropped[1] // step, step)
        return ndimage.gaussian_filter(blocks.mean((1, 3)), sigma / step)

    weight = coarse(surround.astype(np.float64))
    level = coarse(np.where(surround, smooth, 0.0)) / np.maximum(weight, 1e-6)
    level = np.where(weight > 1e-3, level, np.median(smooth[surround]))
    zoom = (smooth.shape[0] / level.shape[0], smooth.shape[1] / level.shape[1])
    return ndimage.zoom(level, zoom, order=1, mode="nearest", grid_mode=True)[: smooth.shape[0], : smooth.shape[1]]


def derive_field_of_view(image: np.ndarray) -> tuple[np.ndarray, str]:
    """The field of view of a fundus photograph ``(C, ...)`` in [0, 1] as one disc-shaped region, and how it was
    found (recorded by evaluation).

    The mean of the channels is median-filtered (5x5). Otsu's threshold splits it into a dark surround and the
    fundus. A first mask keeps what is brighter than the surround's level (median of the dark class) by
    max(0.03, 6 robust standard deviations of its noise), at most halfway to Otsu's threshold. The surround's level
    is then measured around that mask (pixels more than 3% of the image beyond it, Gaussian-averaged over 5%), so an
    uneven or vignetted surround is followed, and the final mask keeps what is brighter than that local level by the
    same rule. Each mask is opened with a disc of 1% of the shorter side, reduced to its largest component and its
    holes filled. Without a dark surround (the darker class brighter than 0.1) the whole image is the FoV. Ours:
    MONAI's ``ForegroundMask`` thresholds globally and keeps every noise island.
    """
    from skimage.filters import threshold_otsu
    from skimage.filters.rank import median
    from skimage.morphology import footprint_rectangle

    grey = np.round(np.asarray(image, dtype=np.float32).mean(0).clip(0, 1) * 255).astype(np.uint8)
    smooth = median(grey, footprint_rectangle((FOV_MEDIAN_SIZE, FOV_MEDIAN_SIZE))).astype(np.float64) / 255
    otsu = float(threshold_otsu(smooth)) if smooth.min() < smooth.max() else float(smooth.max())
    dark = smooth[smooth <= otsu]
    level = float(np.median(dark))
    if level > FOV_SURROUND_LEVEL:
        return np.ones(grey.shape, bool), f"derived: whole image (no dark surround: darker class at {level:.3f})"
    size, cap = min(grey.shape), (otsu - level) / 2

    def margin(residual: np.ndarray) -> tuple[float, float]:
        noise = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
        return min(max(FOV_MIN_MARGIN, FOV_NOISE_FACTOR * noise), cap), noise

    radius = max(1.0, FOV_OPENING * size)
    threshold, noise = margin(dark - level)
    fov = _one_region(smooth - level > threshold, radius)
    surround = ndimage.distance_transform_edt(~fov) > FOV_BAND * size
    how = f"surround level {level:.3f}"
    if surround.mean() > 0.02:  # enough surround to follow its unevenness
        local = _surround_level(smooth, surround, FOV_SMOOTHING * size)
        threshold, noise = margin(smooth[surround] - local[surround])
        fov = _one_region(smooth - local > threshold, radius)
        how = f"local surround level (median {float(np.median(local[~fov])):.3f}, sigma {FOV_SMOOTHING * size:.0f} px)"
    return fov, (
        f"derived: channel mean, {FOV_MEDIAN_SIZE}x{FOV_MEDIAN_SIZE} median, > {how} + {threshold:.3f} "
        f"(max({FOV_MIN_MARGIN}, {FOV_NOISE_FACTOR:g} x noise {noise:.4f}), at most half of Otsu {otsu:.3f} - "
        f"{level:.3f}), opened (disc r {radius:.1f}), largest component, holes filled"
    )


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


def fundus_loading(keys: Sequence[str] = ("image", "label", "mask")) -> list:
    """The one loading pipeline of every config and command: PIL reads (palette GIFs, 1-bit PNGs, RGBA handled),
    channel-first, the input check that names the file, the image scaled from 8 bits to [0, 1] as the released code
    does, labels and masks min-max scaled to [0, 1] (0/1 and 0/255 files alike). Missing label/mask keys are fine."""
    others = [k for k in keys if k != "image"]
    steps: list = [LoadImaged("image", reader="PILReader", converter=to_rgb, image_only=True)]
    if others:
        steps.append(
            LoadImaged(others, reader="PILReader", converter=to_gray, image_only=True, allow_missing_keys=True)
        )
    steps += [
        EnsureChannelFirstd(list(keys), allow_missing_keys=True),
        CheckFundusd(others or ("label", "mask")),
        ScaleIntensityRanged("image", a_min=0, a_max=255, b_min=0.0, b_max=1.0, clip=True),
    ]
    if others:
        steps.append(ScaleIntensityd(others, minv=0.0, maxv=1.0, allow_missing_keys=True))
    return steps


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
