"""Per-image quality control: measures of the photograph's field of view, exposure and contrast, of the model's
uncertainty and of the vessel density, each compared with documented limits; the verdict ``good`` / ``check`` /
``reject`` comes with one reason sentence per limit crossed.

The rules and the derivation of every default limit from the DRIVE and CHASE_DB1 ground truth are in
docs/biomarkers.md; the model-uncertainty limits come from the shipped DRIVE model's probability maps of DRIVE's and
CHASE_DB1's test photographs (``release/quality_limits.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from iternet_monai.data.field_of_view import derive_field_of_view

__all__ = ["QUALITY_COLUMNS", "QualityRule", "DEFAULT_RULES", "photograph_fov", "quality_measures", "quality_flags"]


@dataclasses.dataclass(frozen=True)
class QualityRule:
    """Limits of one measure: below ``check_below`` (or above ``check_above``) the image needs a look; below
    ``reject_below`` (above ``reject_above``) its numbers should not be used. None = no limit on that side."""

    check_below: float | None = None
    reject_below: float | None = None
    check_above: float | None = None
    reject_above: float | None = None


# Defaults: docs/biomarkers.md ("Quality control") derives each from DRIVE's 40 and CHASE_DB1's 28 images.
DEFAULT_RULES: dict[str, QualityRule] = {
    "fov_fraction": QualityRule(check_below=0.45, reject_below=0.2),
    "fov_roundness": QualityRule(check_below=0.9, reject_below=0.7),
    "fov_cut_fraction": QualityRule(check_above=0.05, reject_above=0.35),
    "exposure": QualityRule(check_below=0.1, reject_below=0.04, check_above=0.75, reject_above=0.9),
    "contrast": QualityRule(check_below=0.03, reject_below=0.015),
    "uncertain_fraction": QualityRule(check_above=0.11, reject_above=0.22),
    "mean_entropy_bits": QualityRule(check_above=0.30, reject_above=0.60),
    "tta_disagreement": QualityRule(check_above=0.08, reject_above=0.17),
    "vessel_area_density": QualityRule(check_below=0.05, reject_below=0.01, check_above=0.2, reject_above=0.35),
}

# name: (unit, definition, reason template when it is below a limit, when above)
QUALITY_COLUMNS: dict[str, tuple[str, str, str, str]] = {
    "fov_source": ("text", "where the FoV came from: mask file, derived from the photograph, or whole image", "", ""),
    "fov_fraction": (
        "fraction",
        "FoV pixels / image pixels",
        "the field of view covers only {value:.0%} of the image (limit {limit:.0%}): FoV not found or tiny",
        "",
    ),
    "fov_roundness": (
        "1",
        "4 pi area / perimeter^2 of the convex hull of the FoV's largest component's outline pixels (1 for a disc)",
        "the field of view is not round (roundness {value:.2f}, limit {limit:.2f}): found wrongly or cut off",
        "",
    ),
    "fov_cut_fraction": (
        "fraction",
        "FoV pixels on the image's outermost rows and columns / the FoV's perimeter",
        "",
        "the field of view is cut off by the image frame along {value:.0%} of its outline (limit {limit:.0%})",
    ),
    "exposure": (
        "fraction of full scale",
        "mean green value inside the FoV, 0 black to 1 white",
        "the photograph is dark (mean green {value:.2f} of full scale inside the FoV, limit {limit:.2f})",
        "the photograph is overexposed (mean green {value:.2f} of full scale inside the FoV, limit {limit:.2f})",
    ),
    "contrast": (
        "1",
        "detail contrast: sd(g - G * g) / mean(g), g the green channel inside the FoV eroded by d/32 and G a "
        "Gaussian of sigma d/64, d the FoV's diameter",
        "the photograph has low contrast or is blurred (detail contrast {value:.3f}, limit {limit:.3f})",
        "",
    ),
    "uncertain_fraction": (
        "fraction",
        "share of FoV pixels with vessel probability in [0.3, 0.7]",
        "",
        "the model is unsure on {value:.1%} of the FoV (probability 0.3-0.7; limit {limit:.1%})",
    ),
    "mean_entropy_bits": (
        "bit",
        "mean binary entropy -p log2 p - (1-p) log2 (1-p) of the probability over the FoV",
        "",
        "the model's mean uncertainty is high ({value:.3f} bit per FoV pixel, limit {limit:.3f})",
    ),
    "tta_disagreement": (
        "probability",
        "mean over the FoV of the spread (standard deviation) of test-time-augmented probabilities, when given",
        "",
        "test-time augmentations disagree ({value:.3f} mean spread, limit {limit:.3f})",
    ),
    "vessel_area_density": (
        "fraction",
        "vessel pixels / FoV pixels of the vessel map",
        "too few vessels for a fundus photograph ({value:.1%} of the FoV, limit {limit:.1%})",
        "too many vessel pixels for a fundus photograph ({value:.1%} of the FoV, limit {limit:.1%})",
    ),
    "quality": ("text", "good, check (look at the image) or reject (do not use its numbers)", "", ""),
    "reasons": ("text", "one sentence per limit crossed, joined by '; ' (empty when good)", "", ""),
}


def photograph_fov(photo: np.ndarray) -> np.ndarray:
    """The field of view of an (H, W, 3) photograph (uint8, or float in [0, 1]) by the project's one derivation,
    :func:`iternet_monai.data.field_of_view.derive_field_of_view`; (H, W) bool."""
    image = np.asarray(photo, np.float32)
    if np.asarray(photo).dtype == np.uint8:
        image = image / 255.0
    return derive_field_of_view(np.ascontiguousarray(image.transpose(2, 0, 1)))[0]


def _largest(fov: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(fov, np.ones((3, 3), bool))
    return labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1 if count else fov


def _fov_shape(fov: np.ndarray) -> tuple[float, float]:
    """(roundness of the largest component's convex hull, share of the FoV outline on the image frame)."""
    from scipy.spatial import ConvexHull
    from skimage.measure import perimeter_crofton

    largest = _largest(fov)
    outline = np.argwhere(largest & ~ndimage.binary_erosion(largest))
    if len(outline) < 3 or np.linalg.matrix_rank(outline - outline[0]) < 2:
        return float("nan"), float("nan")
    hull = ConvexHull(outline)  # in 2-D, ``volume`` is the area and ``area`` the perimeter
    roundness = 4 * math.pi * hull.volume / hull.area**2
    on_frame = fov[0].sum() + fov[-1].sum() + fov[1:-1, 0].sum() + fov[1:-1, -1].sum()
    return float(roundness), float(on_frame / perimeter_crofton(np.pad(fov, 1), directions=4))


def _detail_contrast(green: np.ndarray, fov: np.ndarray) -> float:
    diameter = 2 * math.sqrt(fov.sum() / math.pi)
    inner = ndimage.binary_erosion(fov, iterations=max(1, round(diameter / 32)))
    if not inner.any():
        return float("nan")
    detail = green - ndimage.gaussian_filter(green, diameter / 64)
    mean = green[inner].mean()
    return float(detail[inner].std() / mean) if mean > 0 else 0.0


def quality_measures(
    photo: np.ndarray | None = None,
    fov: np.ndarray | None = None,
    probability: np.ndarray | None = None,
    vessel_area_density: float | None = None,
    tta_disagreement: float | np.ndarray | None = None,
    fov_source: str = "",
) -> dict:
    """The measures of :data:`QUALITY_COLUMNS` for what is given (NaN for the rest): ``photo`` (H, W, 3), ``fov``
    (H, W; derived from the photograph when None), ``probability`` (H, W) in [0, 1], the vessel density, and
    ``tta_disagreement`` (a number, or an (H, W) map of per-pixel spread averaged over the FoV)."""
    nan = float("nan")
    if fov is None and photo is not None:
        fov, fov_source = photograph_fov(photo), fov_source or "derived from the photograph"
    row = {"fov_source": fov_source or ("mask file" if fov is not None else "whole image")}
    row.update(dict.fromkeys(("fov_fraction", "fov_roundness", "fov_cut_fraction", "exposure", "contrast"), nan))
    if fov is not None:
        fov = np.asarray(fov).astype(bool)
        row["fov_fraction"] = float(fov.mean())
        row["fov_roundness"], row["fov_cut_fraction"] = _fov_shape(fov)
    inside = fov if fov is not None and fov.any() else None
    if photo is not None:
        green = np.asarray(photo)[..., 1].astype(np.float64)
        green = green / 255.0 if np.asarray(photo).dtype == np.uint8 else green
        region = inside if inside is not None else np.ones(green.shape, bool)
        row["exposure"] = float(green[region].mean())
        row["contrast"] = _detail_contrast(green, region)
    row["uncertain_fraction"] = row["mean_entropy_bits"] = nan
    if probability is not None:
        p = np.asarray(probability, np.float64)
        p = p[inside] if inside is not None else p.ravel()
        row["uncertain_fraction"] = float(((p >= 0.3) & (p <= 0.7)).mean())
        q = np.clip(p, 1e-12, 1 - 1e-12)
        row["mean_entropy_bits"] = float(np.mean(-q * np.log2(q) - (1 - q) * np.log2(1 - q)))
    if tta_disagreement is not None and np.ndim(tta_disagreement) == 2:
        spread = np.asarray(tta_disagreement, np.float64)
        tta_disagreement = spread[inside].mean() if inside is not None else spread.mean()
    row["tta_disagreement"] = nan if tta_disagreement is None else float(tta_disagreement)
    row["vessel_area_density"] = nan if vessel_area_density is None else float(vessel_area_density)
    return row


def quality_flags(measures: Mapping, rules: Mapping[str, QualityRule] | None = None) -> dict:
    """``measures`` (from :func:`quality_measures`) with ``quality`` and ``reasons`` added: ``reject`` when a reject
    limit is crossed, else ``check`` when a check limit is, else ``good``. NaN measures (not available) pass."""
    rules = {**DEFAULT_RULES, **(rules or {})}
    verdict, reasons = "good", []
    for name, rule in rules.items():
        value = measures.get(name)
        if value is None or not isinstance(value, (int, float)) or math.isnan(value):
            continue
        _, _, below, above = QUALITY_COLUMNS[name]
        for level, limit, low_side in (
            ("reject", rule.reject_below, True),
            ("reject", rule.reject_above, False),
            ("check", rule.check_below, True),
            ("check", rule.check_above, False),
        ):
            if limit is not None and (value < limit if low_side else value > limit):
                reasons.append((below if low_side else above).format(value=value, limit=limit))
                verdict = "reject" if level == "reject" or verdict == "reject" else "check"
                break
    return {**measures, "quality": verdict, "reasons": "; ".join(reasons)}
