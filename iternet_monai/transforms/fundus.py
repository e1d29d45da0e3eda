"""Fundus-specific transforms. Everything else in the pipelines is a stock MONAI transform; these exist only
where MONAI has none: PIL converters for fundus files, an input check that names the file, labels read by their
values, a field-of-view mask derived by thresholding, and the original code's saturation jitter."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ImageReader, MetaTensor, NibabelReader, PILReader
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    RandomizableTransform,
    ScaleIntensityRanged,
)
from PIL import Image
from scipy import ndimage

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
    "FieldOfViewd",
    "derive_field_of_view",
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


# Field-of-view derivation (see derive_field_of_view); on [0, 1] images, sizes as fractions of the shorter side.
FOV_CORNER = 0.03  # the surround's colour is the median colour of the four corner squares of this side
FOV_SURROUND_RATIO = 0.5  # corners brighter than this fraction of the centre are no surround: whole image
FOV_MEDIAN_SIZE = 5  # median filter (pixels) against sensor noise and JPEG blocks
FOV_MIN_MARGIN = 0.03  # the FoV is at least this much further from the surround's colour (8 of 255)
FOV_NOISE_FACTOR = 6.0  # ... and this many robust standard deviations of the surround's noise
FOV_OPENING = 0.01  # opening disc radius (cuts bridges to noise)
FOV_BAND = 0.03  # the surround's level is measured this far outside the first mask ...
FOV_SMOOTHING = 0.05  # ... and smoothed over this scale (Gaussian sigma), so an uneven surround is followed
FOV_RIM = (0.01, 0.04)  # the retina's rim level is measured this deep inside the first mask
FOV_EDGE = 0.5  # the edge: halfway from the surround's level to the rim's, so a soft halo ring stays outside
FOV_BLUR = 0.002  # the mask then takes in this much of the edge's blur (1 pixel on DRIVE), as dataset masks do


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


def _masked_level(values: np.ndarray, where: np.ndarray, sigma: float) -> np.ndarray:
    """The level of the ``where`` pixels of ``values`` everywhere: their Gaussian average (normalised
    convolution), computed on a grid ``sigma / 4`` coarser and interpolated back."""
    step = max(1, int(sigma // 4))
    cropped = (values.shape[0] // step * step, values.shape[1] // step * step)

    def coarse(array: np.ndarray) -> np.ndarray:
        blocks = array[: cropped[0], : cropped[1]].reshape(cropped[0] // step, step, cropped[1] // step, step)
        return ndimage.gaussian_filter(blocks.mean((1, 3)), sigma / step)

    weight = coarse(where.astype(np.float64))
    level = coarse(np.where(where, values, 0.0)) / np.maximum(weight, 1e-6)
    level = np.where(weight > 1e-3, level, np.median(values[where]))
    zoom = (values.shape[0] / level.shape[0], values.shape[1] / level.shape[1])
    return ndimage.zoom(level, zoom, order=1, mode="nearest", grid_mode=True)[: values.shape[0], : values.shape[1]]


def _surround_colour(rgb: np.ndarray) -> np.ndarray:
    """The median colour of the four corner squares (3% of the shorter side): a fundus photograph's corners lie
    outside its round field of view, whatever the camera's surround colour."""
    side = max(3, int(FOV_CORNER * min(rgb.shape[1:])))
    corners = [
        rgb[:, rows, columns] for rows in (np.s_[:side], np.s_[-side:]) for columns in (np.s_[:side], np.s_[-side:])
    ]
    return np.median(np.concatenate([c.reshape(len(rgb), -1) for c in corners], 1), 1)


def derive_field_of_view(image: np.ndarray) -> tuple[np.ndarray, str]:
    """The field of view of a fundus photograph ``(C, ...)`` in [0, 1] as one disc-shaped region, and how it was
    found (recorded by evaluation).

    The surround's colour is the median colour of the image's corners; where their brightest channel exceeds half
    the centre's, there is no surround and the whole image is the FoV (a crop inside the fundus). Otherwise every
    pixel's colour distance from the surround's colour (black, dark green or grey alike) is median-filtered (5x5)
    and Otsu's threshold splits it into surround and fundus. A first mask keeps what is further from the surround
    than its level (median of the near class) by max(0.03, 6 robust standard deviations of its noise), at most
    halfway to Otsu's threshold. Around that mask the surround's level is measured (pixels more than 3% of the
    image beyond it) and the rim's level (1-4% inside it), both Gaussian-averaged over 5%, so an uneven surround
    and a vignetted rim are followed. The edge is halfway between the two, where the brightness falls, so a soft
    halo ring around the retina stays outside; the mask then takes in 0.2% of the image's size of the edge's blur
    that clears the noise margin. Each mask is opened with a disc of 1% of the shorter side, reduced to its
    largest component and its holes filled. Ours: MONAI's ``ForegroundMask`` thresholds brightness globally and
    keeps every noise island.
    """
    from skimage.filters import threshold_otsu
    from skimage.filters.rank import median
    from skimage.morphology import footprint_rectangle

    rgb = np.asarray(image, dtype=np.float32).clip(0, 1)
    colour, size = _surround_colour(rgb), min(rgb.shape[1:])
    height, width = rgb.shape[1:]
    centre = float(np.median(rgb[:, height // 4 : height - height // 4, width // 4 : width - width // 4].max(0)))
    if colour.max() > FOV_SURROUND_RATIO * centre:
        return np.ones(rgb.shape[1:], bool), (
            f"derived: whole image (no surround: corners at {colour.max():.3f}, centre at {centre:.3f})"
        )
    distance = np.sqrt(((rgb - colour[:, None, None]) ** 2).mean(0))
    grey = np.round(distance * 255).astype(np.uint8)
    smooth = median(grey, footprint_rectangle((FOV_MEDIAN_SIZE, FOV_MEDIAN_SIZE))).astype(np.float64) / 255
    otsu = float(threshold_otsu(smooth)) if smooth.min() < smooth.max() else float(smooth.max())
    near = smooth[smooth <= otsu]
    level = float(np.median(near))
    cap = (otsu - level) / 2

    def margin(residual: np.ndarray) -> tuple[float, float]:
        noise = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
        return min(max(FOV_MIN_MARGIN, FOV_NOISE_FACTOR * noise), cap), noise

    radius = max(1.0, FOV_OPENING * size)
    threshold, noise = margin(near - level)
    fov = _one_region(smooth - level > threshold, radius)
    depth = ndimage.distance_transform_edt(fov)
    band = (depth > FOV_RIM[0] * size) & (depth <= FOV_RIM[1] * size)
    surround = ndimage.distance_transform_edt(~fov) > FOV_BAND * size
    how = f"> surround level {level:.3f} + {threshold:.3f}"
    if surround.mean() > 0.02 and band.any():  # enough surround and rim to follow them and find the edge
        local = _masked_level(smooth, surround, FOV_SMOOTHING * size)
        threshold, noise = margin(smooth[surround] - local[surround])
        rim = _masked_level(smooth, band, FOV_SMOOTHING * size)
        above = smooth - local
        fov = _one_region(above > np.maximum(threshold, FOV_EDGE * (rim - local)), radius)
        blur = ndimage.distance_transform_edt(~fov) <= max(1.0, FOV_BLUR * size)
        fov = _one_region(fov | (blur & (above > threshold)), radius)
        how = (
            f"halfway from the local surround level (median {float(np.median(local[surround])):.3f}, sigma "
            f"{FOV_SMOOTHING * size:.0f} px) to the rim's (median {float(np.median(rim[band])):.3f}), at least "
            f"+ {threshold:.3f}, with {max(1.0, FOV_BLUR * size):.1f} px of edge blur"
        )
    return fov, (
        f"derived: distance from the surround's colour {tuple(round(float(c), 3) for c in colour)}, "
        f"{FOV_MEDIAN_SIZE}x{FOV_MEDIAN_SIZE} median, {how} (noise margin max({FOV_MIN_MARGIN}, "
        f"{FOV_NOISE_FACTOR:g} x noise {noise:.4f}), at most half of Otsu {otsu:.3f} - {level:.3f}), opened "
        f"(disc r {radius:.1f}), largest component, holes filled"
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
