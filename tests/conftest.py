"""Shared fixtures and helpers: the real datasets in ../shared/data (skipped when absent, a failure under CI=true), the
bundle commands as a user runs them, small synthetic images and a small synthetic training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ITERNET_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ONNX Runtime backend's exports (kept under ``$XDG_CACHE_HOME``) go to a folder of the test session, shared
    by its tests and subprocesses, not to the user's cache."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


def missing(message: str) -> None:
    """A test's data or tool is absent: skip it, except under CI=true where that fails."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def dataset(name: str) -> Path:
    """Path of a shared dataset; skips the test when it is absent, except under CI=true where that fails."""
    path = SHARED_DATA / name
    if not path.is_dir():
        missing(f"dataset {name} not found at {path} (set ITERNET_SHARED_DATA or place ../shared/data)")
    return path


@pytest.fixture
def drive() -> Path:
    return dataset("DRIVE")


@pytest.fixture
def chase() -> Path:
    return dataset("CHASE_DB1")


# Overrides that make a bundle training take seconds: a small network, two 64x64 patches per step, two steps.
FAST = [
    "--network_def#features",
    "4",
    "--patch_size",
    "[64,64]",
    "--batch_size",
    "4",
    "--num_patches",
    "2",
    "--steps_per_epoch",
    "2",
    "--num_workers",
    "0",
    "--val_interval",
    "1",
    "--sw_overlap",
    "0.0",
    "--sw_batch_size",
    "16",
]


def bundle(
    *args: str, cwd: Path = REPO, launcher: tuple[str, ...] = (sys.executable, "-m")
) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>`` (or under ``launcher``), run from the repository root by default."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [*launcher, "monai.bundle", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600
    )


def train_command(dataset_dir: Path, datalist: Path, *extra: str) -> subprocess.CompletedProcess:
    """The user's exact training command, run from the repository root, with a dataset, a datalist and overrides."""
    return bundle(
        "run",
        "training",
        "--config_file",
        "bundles/iternet/train.json",
        "--dataset_dir",
        str(dataset_dir),
        "--datalist",
        str(datalist),
        *extra,
    )


def two_drive_images(drive: Path, tmp: Path) -> Path:
    """A datalist in ``tmp`` of the first two DRIVE training images (to train and validate on) and test images."""
    content = json.loads((REPO / "datalists" / "drive.json").read_text())
    path = tmp / "drive2.json"
    path.write_text(
        json.dumps(
            {
                "training": content["training"][:2],
                "validation": content["training"][:2],
                "testing": content["testing"][:2],
            }
        )
    )
    return path


STEPS = 4  # steps per epoch of the synthetic training: 8 images, 2 per batch


def synthetic_run(
    folder: Path, epochs: int, resume: Path | None = None, hook: Callable | None = None, **options: Any
) -> tuple:
    """Train the synthetic task under a TrainingRun in ``folder``; returns (run, network, batches seen), where a
    batch is identified by the sum of its images."""
    import torch
    from ignite.engine import Events
    from monai.data import CacheDataset, DataLoader
    from monai.engines import SupervisedTrainer
    from monai.transforms import Compose, RandFlipd, RandSpatialCropd
    from monai.utils import set_determinism

    from iternet_monai.engines import TrainingRun

    set_determinism(seed=0)
    rng = np.random.default_rng(0)
    items = [
        {"image": rng.random((3, 24, 24), dtype=np.float32), "label": (rng.random((1, 24, 24)) > 0.5).astype("f4")}
        for _ in range(2 * STEPS)
    ]
    keys = ["image", "label"]
    augment = Compose([RandSpatialCropd(keys, (16, 16), random_size=False), RandFlipd(keys, prob=0.5)])
    loader = DataLoader(CacheDataset(items, augment, progress=False), batch_size=2, shuffle=True, num_workers=0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Conv2d(8, 1, 1)
    )
    optimizer = torch.optim.Adam(network.parameters(), 1e-2)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        epoch_length=STEPS,
        train_data_loader=loader,
        network=network,
        optimizer=optimizer,
        loss_function=torch.nn.BCEWithLogitsLoss(),
        decollate=False,
    )
    batches: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: batches.append(float(e.state.batch["image"].sum())))
    if hook is not None:
        hook(trainer)
    options = {"checkpoint_minutes": 0, **options}
    run = TrainingRun(folder / "models", folder / "eval", resume=resume, **options)
    run.prepare()
    run.run(trainer, {"model": network, "optimizer": optimizer, "trainer": trainer})
    return run, network, batches


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


def drive_arrays(drive, stem):
    """(ground truth, official FoV) of a DRIVE test image as stored, (H, W)."""
    truth = np.asarray(Image.open(drive / "test" / "1st_manual" / f"{stem[:2]}_manual1.gif")) > 0
    return truth, np.asarray(Image.open(drive / "test" / "mask" / f"{stem}_mask.gif")) > 0
