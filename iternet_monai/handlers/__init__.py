"""Ignite handlers: thin wrappers of :mod:`iternet_monai.metrics`, and the training's progress, time budget,
validation and TensorBoard handlers."""

from iternet_monai.handlers.metric_handlers import (
    CAL,
    Betti0Error,
    ClDice,
    Connectivity,
    PixelAUC,
    VesselMetricHandler,
    VesselThresholdMetric,
    protocol_handlers,
)
from iternet_monai.handlers.run_log import StepTimer, engine_loss, every_n_steps
from iternet_monai.handlers.tensorboard_handlers import LearningRateLogger, ValidationImages
from iternet_monai.handlers.time_budget import TimeBudget
from iternet_monai.handlers.training_progress import TrainingProgress
from iternet_monai.handlers.training_validation import TrainingValidation

__all__ = [
    "VesselMetricHandler",
    "PixelAUC",
    "VesselThresholdMetric",
    "Connectivity",
    "ClDice",
    "Betti0Error",
    "CAL",
    "protocol_handlers",
    "LearningRateLogger",
    "ValidationImages",
    "engine_loss",
    "every_n_steps",
    "StepTimer",
    "TimeBudget",
    "TrainingProgress",
    "TrainingValidation",
]
