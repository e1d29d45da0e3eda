"""What a training config calls besides the run and its handlers: data loader workers and their set-up, seeding,
the names of the models, and where a run's progress is."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sized
from pathlib import Path
from typing import Any

import torch
from monai.data.utils import worker_init_fn

from iternet_monai.utils.errors import flag

__all__ = [
    "default_num_workers",
    "seed_everything",
    "loader_worker_init",
    "other_metrics",
    "final_model_name",
    "STATS_FILE",
    "latest_stats",
]

# A run's schedule and progress (TrainingProgress), in its own folder <output_dir>/<run>/.
STATS_FILE = "train_stats.json"


def latest_stats(output_dir: str | Path) -> Path | None:
    """The ``train_stats.json`` of the run in ``output_dir`` that wrote last, or None before any run wrote one."""
    found = []
    for path in Path(output_dir).glob(f"*/{STATS_FILE}"):
        try:
            found.append((path.stat().st_mtime, path))
        except FileNotFoundError:
            continue
    return max(found)[1] if found else None


def default_num_workers(device: torch.device | str = "cpu", cache_device: torch.device | str = "cpu") -> int:
    """Data loader worker processes for this process's share of the cores (torchrun's ``LOCAL_WORLD_SIZE``
    processes share them), one core staying with the training process: training on a CPU at most 4 (the training
    needs the cores), on a GPU at most 12 (MONAI's augmentation costs about 17 ms of CPU per DRIVE image, so the
    34 steps/s of 8 images an H100 takes need about 5 cores); 0 on one core. 0 too when the images
    are cached on the GPU (``cache_device``): a thread loader augments them there, and worker processes cannot
    share them."""
    if torch.device(cache_device).type == "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cores //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(0, min(12 if torch.device(device).type == "cuda" else 4, cores - 1))


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """MONAI's ``set_determinism(seed)``; unless ``deterministic``, cuDNN then picks its fastest kernels again
    (``set_determinism`` turns benchmarking off), so runs repeat their data and augmentation but not every last
    bit of GPU arithmetic."""
    from monai.utils import set_determinism

    set_determinism(seed=seed)
    if not flag(deterministic, "deterministic"):
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False


def loader_worker_init(worker_id: int) -> None:
    """MONAI's data loader worker set-up, with Ctrl-C left to the training process: a terminal sends it to every
    process, and a worker that dies of it would end the run before it saves its checkpoint. (SIGTERM stays: it
    is how Python's multiprocessing stops workers at exit; :class:`TrainingRun` copes with workers it kills.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker_init_fn(worker_id)


def other_metrics(metrics: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The metric handlers other than the key metric (an evaluator's ``additional_metrics``)."""
    return {name: handler for name, handler in metrics.items() if name != key}


def final_model_name(validation_items: Sized) -> str:
    """The file of the last epoch's network: ``model_final.pt`` beside the best-validated ``model.pt``, or
    ``model.pt`` itself when there are no validation images (the last model is then the only one)."""
    return "model_final.pt" if len(validation_items) else "model.pt"
