"""A training that fits a time budget: the one handler that changes the trainer's ``max_epochs``."""

from __future__ import annotations

import logging

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from iternet_monai.handlers.run_log import StepTimer, duration, is_main_process

__all__ = ["TimeBudget"]

logger = logging.getLogger(__name__)


class TimeBudget:
    """Train the most epochs of the schedule that fit in ``minutes``, everything else unchanged. The number is
    re-planned after every epoch at the speed of the epoch just ended (with the mean time between epochs:
    validation, checkpoints), both ways up to the planned epochs, so a machine busy for a while shortens the
    schedule only while it is busy; validations are counted once they have run. In a distributed training every
    process attaches it and trains the epochs the main process plans. A move of a twentieth of the
    schedule, and the end it brings forward, are said in the log. Attach it before the handlers that report the
    schedule (:class:`~iternet_monai.handlers.TrainingProgress`), so that they report the plan in force.

    The last ``final_minutes`` of the budget can train at ``final_learning_rate`` (an annealing step at the end of a
    training whose end only the budget knows; ours, as ignite's and PyTorch's schedulers count steps or epochs, not
    time left). The rate is set, not multiplied, so a training resumed in its final minutes keeps that rate.

    Args:
        minutes: the budget of this session of the training; None trains the whole schedule.
        optimizer: the optimizer whose learning rate the final minutes change; None leaves it alone.
        final_minutes: minutes at the end of the budget trained at ``final_learning_rate``.
        final_learning_rate: the learning rate of those final minutes.
    """

    def __init__(
        self,
        minutes: float | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        final_minutes: float = 0.0,
        final_learning_rate: float | None = None,
    ) -> None:
        self.budget = None if minutes is None else 60.0 * float(minutes)
        self.timer = StepTimer()
        self.planned_epochs: int | None = None
        self.optimizer, self.final_seconds = optimizer, 60.0 * float(final_minutes)
        self.final_learning_rate = final_learning_rate
        self.final_phase = False

    def attach(self, engine: Engine) -> None:
        if self.budget is None:
            return
        self.timer.attach(engine)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        if self.optimizer is not None and self.final_learning_rate is not None and self.final_seconds > 0:
            # at a step's start, so after every STARTED handler (a resumed optimizer's state included)
            engine.add_event_handler(Events.ITERATION_STARTED, self._final_learning_rate)

    def _final_learning_rate(self, engine: Engine) -> None:
        if self.final_phase or self.budget - self.timer.elapsed() > self.final_seconds:
            return
        self.final_phase = True
        for group in self.optimizer.param_groups:
            group["lr"] = self.final_learning_rate
        if is_main_process():
            logger.warning(
                f"time budget of {duration(self.budget)}: the last {duration(self.final_seconds)} train at learning "
                f"rate {self.final_learning_rate:g} (step {engine.state.iteration + 1})"
            )

    def _started(self, engine: Engine) -> None:
        self.planned_epochs = self.planned_epochs or engine.state.max_epochs
        self.announced_epochs = engine.state.max_epochs

    def __call__(self, engine: Engine) -> None:
        state, timer = engine.state, self.timer
        if self.budget is None or not timer.steps_timed or state.epoch >= state.max_epochs:
            return
        recent = timer.epoch_steps_timed >= 3
        per_step = timer.epoch_step_seconds / timer.epoch_steps_timed if recent else timer.per_step() or 0.0
        per_epoch = state.epoch_length * per_step + timer.per_boundary()
        left = self.budget - timer.elapsed()
        planned = self.planned_epochs or state.max_epochs
        fits = min(planned, state.epoch + max(0, int(left // per_epoch)))
        if idist.get_world_size() > 1:  # every process trains the epochs the main process plans
            fits = int(idist.broadcast(fits, src=0))
        if fits == state.max_epochs:
            return
        state.max_epochs = max(state.epoch, fits)
        # said when the plan moves by a twentieth of the schedule since last said (not at every epoch's jitter), and
        # when it ends the training now
        moved = abs(state.max_epochs - self.announced_epochs) >= max(1, planned // 20)
        if not (moved or state.max_epochs == state.epoch):
            return
        self.announced_epochs = state.max_epochs
        if is_main_process():
            logger.warning(
                f"time budget of {duration(self.budget)}: training {state.max_epochs} of the {planned} planned "
                f"epochs ({duration(per_epoch)} per epoch now); everything else is unchanged"
            )
