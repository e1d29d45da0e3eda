"""The field of view of a fundus photograph derived from its colours (:func:`derive_field_of_view`), in NumPy alone:
the transform :class:`~iternet_monai.transforms.FieldOfViewd` applies it where an item has no mask, and quality
control (:func:`~iternet_monai.biomarkers.photograph_fov`) where it measures a photograph, without PyTorch."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["derive_field_of_view"]

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


def _noise_margin(residual: np.ndarray, cap: float) -> tuple[float, float]:
    """How far above the surround's level the FoV starts: max(FOV_MIN_MARGIN, FOV_NOISE_FACTOR robust standard
    deviations of the surround's ``residual``), at most ``cap``; and that standard deviation."""
    noise = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    return min(max(FOV_MIN_MARGIN, FOV_NOISE_FACTOR * noise), cap), noise


def _follow_edge(
    smooth: np.ndarray, fov: np.ndarray, size: int, radius: float, cap: float
) -> tuple[np.ndarray, float, float, str] | None:
    """The first mask ``fov`` refined (see :func:`derive_field_of_view`): the edge halfway between the local surround
    level and the rim's, then the edge's blur taken in. Returns (mask, noise margin, noise, how it was found), or
    None when there is too little surround or rim to follow."""
    depth = ndimage.distance_transform_edt(fov)
    band = (depth > FOV_RIM[0] * size) & (depth <= FOV_RIM[1] * size)
    surround = ndimage.distance_transform_edt(~fov) > FOV_BAND * size
    if not (surround.mean() > 0.02 and band.any()):
        return None
    local = _masked_level(smooth, surround, FOV_SMOOTHING * size)
    threshold, noise = _noise_margin(smooth[surround] - local[surround], cap)
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
    return fov, threshold, noise, how


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
    radius = max(1.0, FOV_OPENING * size)
    threshold, noise = _noise_margin(near - level, cap)
    fov = _one_region(smooth - level > threshold, radius)
    how = f"> surround level {level:.3f} + {threshold:.3f}"
    followed = _follow_edge(smooth, fov, size, radius, cap)
    if followed is not None:
        fov, threshold, noise, how = followed
    return fov, (
        f"derived: distance from the surround's colour {tuple(round(float(c), 3) for c in colour)}, "
        f"{FOV_MEDIAN_SIZE}x{FOV_MEDIAN_SIZE} median, {how} (noise margin max({FOV_MIN_MARGIN}, "
        f"{FOV_NOISE_FACTOR:g} x noise {noise:.4f}), at most half of Otsu {otsu:.3f} - {level:.3f}), opened "
        f"(disc r {radius:.1f}), largest component, holes filled"
    )
