"""A training that fits a time budget: the one handler that changes the trainer's ``max_epochs``."""

from __future__ import annotations

import logging

import ignite.distributed as idist
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

    Args:
        minutes: the budget of this session of the training; None trains the whole schedule.
    """

    def __init__(self, minutes: float | None = None) -> None:
        self.budget = None if minutes is None else 60.0 * float(minutes)
        self.timer = StepTimer()
        self.planned_epochs: int | None = None

    def attach(self, engine: Engine) -> None:
        if self.budget is None:
            return
        self.timer.attach(engine)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

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
