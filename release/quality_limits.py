"""Where the quality check's model-uncertainty limits come from: the shipped model's probability maps of real test
photographs (DRIVE, CHASE_DB1), and of DRIVE's first test photograph made worse (darker, blurred, noisier), measured
by the bundle's own inference with ``--measure true`` (quality.csv: ``uncertain_fraction``, ``mean_entropy_bits``).

    python release/quality_limits.py --drive DRIVE --chase CHASE_DB1 [--ckpt model.pt] [--output limits.json]

Prints, per group of photographs, the smallest and largest value of each uncertainty measure and the verdict the
current limits give; docs/biomarkers.md derives the limits from these numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
MEASURES = ("uncertain_fraction", "mean_entropy_bits")


def degraded(photo: Path, folder: Path) -> None:
    """DRIVE's first test photograph darkened, blurred and with noise, each at three strengths."""
    image = Image.open(photo).convert("RGB")
    pixels = np.asarray(image, np.float64)
    rng = np.random.default_rng(0)
    for factor in (0.4, 0.3, 0.2):
        Image.fromarray((pixels * factor).astype(np.uint8)).save(folder / f"dark{factor}.png")
    for radius in (2, 4, 8):
        image.filter(ImageFilter.GaussianBlur(radius)).save(folder / f"blur{radius}.png")
    for sigma in (10, 20, 40):
        noisy = np.clip(pixels + rng.normal(0, sigma, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"noise{sigma}.png")


def measured(folder: Path, output: Path, ckpt: str | None) -> list[dict]:
    """quality.csv rows of the bundle's inference with --measure true on every photograph of ``folder``."""
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/iternet/configs/inference.json",
        "--dataset_dir", str(folder), "--output_dir", str(output), "--measure", "true", "--mode", "whole_image",
    ] + (["--ckpt_path", ckpt] if ckpt else [])  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    with open(output / "quality.csv", newline="") as rows:
        return list(csv.DictReader(rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drive", type=Path, required=True, help="the DRIVE folder")
    parser.add_argument("--chase", type=Path, required=True, help="the CHASE_DB1 folder")
    parser.add_argument("--ckpt", help="weights (default: the bundle's models/model.pt)")
    parser.add_argument("--output", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args()
    groups = {}
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        folders = {name: work / name for name in ("drive_test", "chase_db1", "drive_01_test_degraded")}
        for folder in folders.values():
            folder.mkdir()
        for photo in sorted((args.drive / "test" / "images").glob("*.tif")):
            shutil.copy(photo, folders["drive_test"])
        for photo in sorted(args.chase.glob("Image_*.jpg")):
            shutil.copy(photo, folders["chase_db1"])
        degraded(args.drive / "test" / "images" / "01_test.tif", folders["drive_01_test_degraded"])
        for name, folder in folders.items():
            rows = measured(folder, work / f"out_{name}", args.ckpt)
            groups[name] = {
                "images": len(rows),
                **{m: [min(float(r[m]) for r in rows), max(float(r[m]) for r in rows)] for m in MEASURES},
                "per_image": {r["image"]: {m: float(r[m]) for m in MEASURES} | {"verdict": r["quality"]} for r in rows},
            }
    for name, group in groups.items():
        ranges = ", ".join(f"{m} {lo:.3f}-{hi:.3f}" for m, (lo, hi) in ((m, group[m]) for m in MEASURES))
        print(f"{name} ({group['images']} images): {ranges}")
        if name.endswith("degraded"):
            for image, values in group["per_image"].items():
                print(f"  {image}: " + ", ".join(f"{m} {values[m]:.3f}" for m in MEASURES) + f", {values['verdict']}")
    if args.output:
        args.output.write_text(json.dumps(groups, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
