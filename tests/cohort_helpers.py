"""Helpers of the cohort tests: the user's command, a manifest of real photographs and bad files, the tables."""

import csv
from pathlib import Path

import numpy as np
from conftest import dataset, write_image
from PIL import Image

from iternet_monai.cli import main

TABLES = ("biomarkers.csv", "segments.csv", "quality.csv", "failures.csv")
BAD = {
    "missing": "cannot read the photograph (No such file or directory)",
    "text": "is not a readable image",
    "gray": "grayscale image",
    "huge": "more than the limit of 1,000,000 (max_pixels)",
}


def cohort(manifest: Path, output: Path, *options: str) -> int:
    """The user's command, with the PyTorch backend (inference.json's run in the equality test uses it too)."""
    return main(["cohort", str(manifest), "--output", str(output), "--backend", "pytorch", *options])


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def result_files(output: Path) -> list[Path]:
    """The stored results (``results/<id>.json``; an id never starts with a dot, a temporary file always does)."""
    return sorted(p for p in (output / "results").glob("*.json") if not p.name.startswith("."))


def result_times(output: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in result_files(output)}


def write_manifest(root: Path, drive_images: int = 1, chase_images: int = 1) -> tuple[Path, tuple[str, ...]]:
    """A manifest of real DRIVE test and CHASE_DB1 photographs (in the shared data, not copied) and the four bad
    files of :data:`BAD` (``--max-pixels 1000000`` makes ``huge`` too large); returns it and its good ids."""
    drive, chase = dataset("DRIVE"), dataset("CHASE_DB1")
    (root / "text.png").write_text("not an image\n")
    photo = np.asarray(Image.open(drive / "test" / "images" / "01_test.tif"))
    write_image(root / "gray.png", photo[..., 1])
    write_image(root / "huge.png", np.zeros((1001, 1000, 3), np.uint8))  # above --max-pixels 1000000
    good = [
        (f"drive{n:02d}", drive / "test" / "images" / f"{n:02d}_test.tif", "right") for n in range(1, 1 + drive_images)
    ]
    chase_photos = sorted(chase.glob("Image_*.jpg"))[:chase_images]
    good += [(f"chase{p.stem[6:]}", p, "left" if p.stem.endswith("L") else "right") for p in chase_photos]
    lines = ["id,path,eye", *(f"{image_id},{path},{eye}" for image_id, path, eye in good)]
    lines += ["missing,no_such.png,", "text,text.png,", "gray,gray.png,", "huge,huge.png,"]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv", tuple(image_id for image_id, _, _ in good)
