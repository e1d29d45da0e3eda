"""Validation during training, with the validator as the config declares it."""

from __future__ import annotations

import logging
import time
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler

from iternet_monai.handlers.run_log import duration, is_main_process

__all__ = ["TrainingValidation"]

logger = logging.getLogger(__name__)


class TrainingValidation(ValidationHandler):
    """MONAI's ``ValidationHandler`` that says how far validation is: when it starts, every ``progress_seconds``
    and when it ends. The last epoch is always validated, so the epochs after the last ``interval`` of a schedule
    cut short (a time budget) can still give ``model.pt``. The validator runs as configured, its inferer included.

    Args:
        validator: the evaluator to run.
        interval: epochs (or iterations, with ``epoch_level`` false) between validations.
        progress_seconds: seconds between progress lines during a validation.
        epoch_level: validate every ``interval`` epochs, else iterations.
        exec_at_start: also validate before the first epoch (the starting weights).
    """

    def __init__(
        self,
        validator: Any,
        interval: int,
        progress_seconds: float = 30.0,
        epoch_level: bool = True,
        exec_at_start: bool = False,
    ) -> None:
        super().__init__(interval, validator, epoch_level, exec_at_start)
        self.progress_seconds = float(progress_seconds)
        self._last_log = 0.0

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        self.validator.add_event_handler(Events.ITERATION_COMPLETED, self._progress)
        if self.epoch_level:
            engine.add_event_handler(Events.COMPLETED, self._validate_last_epoch)

    def _validate_last_epoch(self, engine: Engine) -> None:
        if engine.state.epoch % self.interval:
            self(engine)

    def __call__(self, engine: Engine) -> None:
        images = len(self.validator.data_loader)
        if is_main_process():
            logger.info(f"validating on {images} images (epoch {engine.state.epoch}) ...")
        start = self._last_log = time.monotonic()
        super().__call__(engine)
        if is_main_process():
            logger.info(f"validation took {duration(time.monotonic() - start)}")

    def _progress(self, evaluator: Engine) -> None:
        if time.monotonic() - self._last_log >= self.progress_seconds and is_main_process():
            self._last_log = time.monotonic()
            logger.info(f"validation: image {evaluator.state.iteration}/{len(self.validator.data_loader)}")
