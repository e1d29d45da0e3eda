"""Per-image quality control: DRIVE's test photographs pass; photographs made dark, low-contrast or cut off, unsure
probability maps and implausible vessel densities are flagged with the right reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from iternet_monai.biomarkers.measure import parse_rules
from iternet_monai.biomarkers.quality import QUALITY_COLUMNS, photograph_fov, quality_flags, quality_measures
from iternet_monai.utils.errors import InputError


def drive_image(drive, number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    photo = np.asarray(Image.open(drive / "test" / "images" / f"{number:02d}_test.tif").convert("RGB"))
    label = np.asarray(Image.open(drive / "test" / "1st_manual" / f"{number:02d}_manual1.gif")) > 127
    mask = np.asarray(Image.open(drive / "test" / "mask" / f"{number:02d}_test_mask.gif")) > 127
    return photo, label, mask


def verdict(photo, fov=None, **kwargs) -> dict:
    return quality_flags(quality_measures(photo, fov, **kwargs))


def test_drive_test_photographs_are_good(drive):
    for number in range(1, 21):
        photo, label, mask = drive_image(drive, number)
        official = verdict(photo, mask, vessel_area_density=(label & mask).sum() / mask.sum())
        derived = verdict(photo, vessel_area_density=(label & mask).sum() / mask.sum())
        assert (official["quality"], official["reasons"]) == ("good", ""), number
        assert (derived["quality"], derived["reasons"]) == ("good", ""), number
        assert derived["fov_source"] == "derived from the photograph" and official["fov_source"] == "mask file"
        assert abs(derived["fov_fraction"] - mask.mean()) < 0.01


def test_spoilt_photographs_are_flagged_with_the_right_reason(drive):
    photo, _, mask = drive_image(drive, 1)
    pixels = photo.astype(np.float64)
    mean = pixels[mask].mean(axis=0)
    dark = (pixels * 0.2).astype(np.uint8)
    flat = (np.clip(mean + 0.3 * (pixels - mean), 0, 255) * mask[..., None]).astype(np.uint8)
    shift = int(0.2 * photo.shape[1])
    cut = np.zeros_like(photo)
    cut[:, :-shift] = photo[:, shift:]
    for spoilt, words in ((dark, "is dark"), (flat, "low contrast"), (cut, "cut off by the image frame")):
        row = verdict(spoilt)
        assert row["quality"] in ("check", "reject") and words in row["reasons"], row["reasons"]
        others = [w for w in ("is dark", "low contrast", "cut off") if w not in words]
        assert not any(w in row["reasons"] for w in others), row["reasons"]
    assert verdict(photo)["quality"] == "good"


def test_uncertain_probability_maps_and_implausible_density_are_flagged():
    rng = np.random.default_rng(0)
    confident = np.where(rng.random((64, 64)) < 0.12, 0.98, 0.01)
    assert verdict(None, probability=confident)["quality"] == "good"
    unsure = confident.copy()
    unsure[:24] = 0.5  # 37.5 % of the pixels at p = 0.5 (1 bit each)
    row = verdict(None, probability=unsure)
    assert row["uncertain_fraction"] == pytest.approx(0.375)
    assert row["mean_entropy_bits"] == pytest.approx(0.375, abs=0.06)
    assert row["quality"] == "reject" and "unsure on 37.5% of the FoV" in row["reasons"]
    assert "mean uncertainty is high" in row["reasons"]
    assert "augmentations disagree" in verdict(None, tta_disagreement=0.1)["reasons"]
    assert "augmentations disagree" in verdict(None, tta_disagreement=np.full((8, 8), 0.2))["reasons"]
    sparse = verdict(None, vessel_area_density=0.005)
    assert sparse["quality"] == "reject" and "too few vessels" in sparse["reasons"]
    assert "too many vessel pixels" in verdict(None, vessel_area_density=0.25)["reasons"]
    nothing = verdict(None)
    assert (nothing["quality"], nothing["fov_source"]) == ("good", "whole image")
    assert set(nothing) == set(QUALITY_COLUMNS)


def test_limits_are_options(drive):
    photo, _, mask = drive_image(drive, 1)
    strict = parse_rules(["exposure.check_below=0.6", "contrast.check_below=none"])
    row = quality_flags(quality_measures(photo, mask), strict)
    assert row["quality"] == "check" and row["reasons"].startswith("the photograph is dark")
    assert strict["contrast"].check_below is None and strict["contrast"].reject_below == 0.015
    for bad in ("exposure=0.1", "brightness.check_below=1", "exposure.check_below=dim"):
        with pytest.raises(InputError, match="--qc"):
            parse_rules([bad])


def test_fov_of_a_photograph_uses_the_project_derivation():
    rows, cols = np.mgrid[:60, :80]
    disc = (rows - 30) ** 2 + (cols - 40) ** 2 < 25**2
    photo = np.zeros((60, 80, 3), np.uint8)
    photo[disc] = (150, 80, 30)
    assert (photograph_fov(photo) == disc).all()
    row = quality_measures(photo)
    assert row["fov_fraction"] == pytest.approx(disc.mean()) and row["fov_roundness"] > 0.95
    assert row["fov_cut_fraction"] == 0
