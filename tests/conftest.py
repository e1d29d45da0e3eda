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
