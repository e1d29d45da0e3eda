"""What the training's handlers share: durations as a person reads them, the main process, the patches and loss of
a step, a log filter, and a timer of the trainer's steps."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

__all__ = ["duration", "is_main_process", "batch_patches", "engine_loss", "every_n_steps", "StepTimer"]


def duration(seconds: float) -> str:
    """``12.3 s``, ``3m 20s``, ``40h 2m``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def is_main_process() -> bool:
    """Whether this process logs and writes the run's files (rank 0 of a distributed training)."""
    return idist.get_rank() == 0


def batch_patches(batch: Any) -> tuple[int, tuple[int, ...]]:
    """(patches, their spatial shape) of a training batch: a collated dict, or the list of samples MONAI's
    ``decollate`` leaves; (0, ()) for anything else."""
    if isinstance(batch, Mapping) and isinstance(batch.get("image"), torch.Tensor):
        return len(batch["image"]), tuple(batch["image"].shape[2:])
    if isinstance(batch, list) and batch and isinstance(batch[0], Mapping):
        image = batch[0].get("image")
        return len(batch), tuple(image.shape[1:]) if isinstance(image, torch.Tensor) else ()
    return 0, ()


def engine_loss(output: dict | list) -> float:
    """The loss of a trainer's output, decollated (a list of dicts) or not, detached from the graph."""
    loss = (output[0] if isinstance(output, list) else output)["loss"]
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


def every_n_steps(n: int) -> Callable[[Engine, int], bool]:
    """An ``iteration_log`` event filter for MONAI's stats handlers: every ``n``-th step and the last of each epoch,
    so that logging the loss (a GPU sync) does not hold up every step, and short runs still log.

    Args:
        n: steps between log lines.
    """

    def log_now(engine: Engine, iteration: int) -> bool:
        return iteration % n == 0 or iteration % engine.state.epoch_length == 0

    return log_now


class StepTimer:
    """Times a trainer's steps for an estimate of what is left: the first step of a session apart (it includes the
    data loader's start-up), all later steps, those of the epoch in progress, and the time between epochs
    (validation, checkpoints); it counts the patches of the timed steps too. Attach it before the handler that
    reads it, so that its figures include the event being handled."""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._step)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine: Engine) -> None:
        self.started_at = self.previous = time.monotonic()
        self.first_iteration = engine.state.iteration
        self.step_seconds = self.boundary_seconds = self.epoch_step_seconds = self.last_step_seconds = 0.0
        self.steps_timed = self.boundaries = self.epoch_steps_timed = 0
        self.first_patches, self.patches_timed = 0, 0
        self.epoch_end: float | None = None

    def _epoch_started(self, engine: Engine) -> None:
        now = time.monotonic()
        if self.epoch_end is not None:
            self.boundary_seconds += now - self.epoch_end
            self.boundaries += 1
        self.previous, self.epoch_end = now, None
        self.epoch_step_seconds, self.epoch_steps_timed = 0.0, 0

    def _step(self, engine: Engine) -> None:
        now = time.monotonic()
        patches = batch_patches(engine.state.batch)[0]
        self.last_step_seconds = now - self.previous
        if self.is_first_step(engine):
            self.first_patches = patches
        else:
            self.step_seconds += self.last_step_seconds
            self.epoch_step_seconds += self.last_step_seconds
            self.steps_timed += 1
            self.epoch_steps_timed += 1
            self.patches_timed += patches
        self.previous = now

    def _epoch_completed(self, engine: Engine) -> None:
        self.epoch_end = time.monotonic()

    def is_first_step(self, engine: Engine) -> bool:
        """Whether the step just completed is the first of this session."""
        return engine.state.iteration == self.first_iteration + 1

    def elapsed(self) -> float:
        """Seconds since the trainer started this session."""
        return time.monotonic() - self.started_at

    def per_step(self) -> float | None:
        """Mean seconds of a timed step, None before one was timed."""
        return self.step_seconds / self.steps_timed if self.steps_timed else None

    def per_boundary(self) -> float:
        """Mean seconds between an epoch's end and the next one's start (0 before the second epoch)."""
        return self.boundary_seconds / self.boundaries if self.boundaries else 0.0

    def patches_per_second(self) -> float | None:
        """Patches of the timed steps per second of them, None before one was timed."""
        return self.patches_timed / self.step_seconds if self.patches_timed and self.step_seconds else None

    def seconds_left(self, engine: Engine) -> float:
        """The time the steps and epoch boundaries left in the schedule take at the speed so far (a step timed)."""
        state = engine.state
        steps_left = state.epoch_length * state.max_epochs - state.iteration
        return steps_left * (self.per_step() or 0.0) + (state.max_epochs - state.epoch) * self.per_boundary()
