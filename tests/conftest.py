"""Shared fixtures: the real datasets in ../shared/data (skipped when absent, a failure under CI=true)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ITERNET_SHARED_DATA", REPO.parent / "shared" / "data"))


def dataset(name: str) -> Path:
    """Path of a shared dataset; skips the test when it is absent, except under CI=true where that fails."""
    path = SHARED_DATA / name
    if not path.is_dir():
        message = f"dataset {name} not found at {path} (set ITERNET_SHARED_DATA or place ../shared/data)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def drive() -> Path:
    return dataset("DRIVE")


@pytest.fixture
def chase() -> Path:
    return dataset("CHASE_DB1")


def write_image(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def fundus_like(height: int = 48, width: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small RGB disc with dark line 'vessels' and its binary label."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 2.2) ** 2
    label = disc & ((yy % 12 < 2) | (xx % 16 < 2))
    image = np.zeros((height, width, 3), np.uint8)
    image[disc] = (180, 90, 40)
    image[label] = (90, 40, 20)
    image = np.clip(image + rng.integers(0, 10, image.shape), 0, 255).astype(np.uint8)
    return image, (label * 255).astype(np.uint8)


def bad_input_corpus(root: Path, size: tuple[int, int] = (130, 140)) -> tuple[list[dict], dict[str, str]]:
    """Files under ``root`` for one good item and one of every kind of bad input, as datalist entries relative to
    ``root`` (the good one first), and for each bad file name the words its problem line must hold."""
    image, label = fundus_like(*size)
    write_image(root / "good.png", image)
    write_image(root / "label.png", label)
    write_image(root / "full.jpg", image)
    data = (root / "full.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    write_image(root / "tiny.png", image[:1, :1])
    write_image(root / "tiny_label.png", label[:1, :1])
    write_image(root / "small.png", image[:15, :15])
    write_image(root / "small_label.png", label[:15, :15])
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not an image\n")
    (root / "link.png").symlink_to(root / "gone.png")
    write_image(root / "gray.png", image[..., 1])
    write_image(root / "wrong_size_label.png", label[:-2])
    entries = [{"image": "good.png", "label": "label.png"}]
    entries += [{"image": name, "label": "label.png"} for name in ("truncated.jpg", "empty.png", "text.png")]
    entries += [{"image": name, "label": "label.png"} for name in ("link.png", "gray.png", "missing.png")]
    entries += [
        {"image": "tiny.png", "label": "tiny_label.png"},
        {"image": "small.png", "label": "small_label.png"},
        {"image": "full.jpg"},
        {"image": "good.png", "label": "wrong_size_label.png"},
    ]
    expected = {
        "truncated.jpg": "truncated or corrupt image",
        "empty.png": "empty file (0 bytes)",
        "text.png": "not an image file",
        "link.png": "broken symbolic link",
        "gray.png": "grayscale image",
        "missing.png": "missing",
        "tiny.png": "1x1 pixels, smaller than the 128x128",
        "small.png": "15x15 pixels, smaller than the 128x128",
        "full.jpg": "no label",
        "wrong_size_label.png": f"label is {size[1]}x{size[0] - 2} but its image",
    }
    return entries, expected
