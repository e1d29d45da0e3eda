"""Ignite handlers: thin wrappers of :mod:`iternet_monai.metrics` and the training's helpers."""

from iternet_monai.handlers.metric_handlers import (
    CAL,
    Betti0Error,
    ClDice,
    Connectivity,
    LearningRateLogger,
    PixelAUC,
    ValidationImages,
    VesselMetricHandler,
    VesselThresholdMetric,
    engine_loss,
    every_n_steps,
    protocol_handlers,
)

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
]
