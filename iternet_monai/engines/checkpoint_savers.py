"""Checkpoint savers that lose nothing: every file is written atomically, and an outdated one is removed only after
its successor is complete."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from iternet_monai.engines.checkpoints import save_atomic

__all__ = ["AtomicDiskSaver", "AtomicCheckpointSaver"]


def _plain(value: Any) -> Any:
    """A metric value as a Python number (a checkpoint must load with ``weights_only=True``)."""
    return float(value) if isinstance(value, (np.generic, torch.Tensor)) else value


class AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` writing through :func:`~.checkpoints.save_atomic` (temporary file, fsync,
    rename) and removing an outdated file only after
    the new one is complete: ignite's ``Checkpoint`` asks for the removal first, so a kill between the two would
    leave no checkpoint at all. ``filename`` fixes the name of every file written (MONAI's ``model.pt``)."""

    def __init__(self, dirname: str | Path, filename: str | None = None) -> None:
        super().__init__(dirname, atomic=True, create_dir=True, require_empty=False)
        self.filename = filename
        self._outdated: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        filename = self.filename or filename
        if idist.get_rank() == self.save_on_rank:
            save_atomic(checkpoint, self.dirname / filename)
            for name in self._outdated:
                if name != filename:
                    (self.dirname / name).unlink(missing_ok=True)
        self._outdated.clear()

    def remove(self, filename: str) -> None:
        self._outdated.append(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` writing through :class:`AtomicDiskSaver`. Its best score and file are part of
    the training state (:meth:`state_dict`, with the validator's best metric), so a resumed run replaces
    ``model.pt`` only by a better model. A run that ends in an error writes no final model: its resumable
    checkpoint holds that state, and ``model_final.pt`` means the schedule was completed."""

    def __init__(self, save_dir: str, save_dict: dict, **kwargs: Any) -> None:
        super().__init__(save_dir, save_dict, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = AtomicDiskSaver(save_dir, checkpoint.save_handler.filename)
        self._engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        self._engine = engine

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        raise e

    def state_dict(self) -> dict:
        saved = self._key_metric_checkpoint.state_dict()["_saved"] if self._key_metric_checkpoint else []
        state = self._engine.state if self._engine is not None else None
        return {
            "_saved": [(_plain(priority), name) for priority, name in saved],
            "best_metric": _plain(getattr(state, "best_metric", -1)),
            "best_metric_epoch": int(getattr(state, "best_metric_epoch", -1)),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if self._key_metric_checkpoint is not None:
            self._key_metric_checkpoint.load_state_dict({"_saved": state_dict["_saved"]})
        if self._engine is not None:
            self._engine.state.best_metric = state_dict["best_metric"]
            self._engine.state.best_metric_epoch = state_dict["best_metric_epoch"]
