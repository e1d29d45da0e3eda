"""Ignite handlers: thin wrappers of :mod:`iternet_monai.metrics`, the evaluation's report, batch inference's
weights loader, writers and progress bar, and the training's progress, time budget, validation and TensorBoard
handlers."""

from iternet_monai.handlers.biomarker_writer import BiomarkerWriter
from iternet_monai.handlers.image_progress import ImageProgress
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
from iternet_monai.handlers.protocol_report import ProtocolReport, nan_reason
from iternet_monai.handlers.report_files import summary_table
from iternet_monai.handlers.run_log import StepTimer, engine_loss, every_n_steps
from iternet_monai.handlers.tensorboard_handlers import LearningRateLogger, ValidationImages
from iternet_monai.handlers.time_budget import TimeBudget
from iternet_monai.handlers.training_progress import TrainingProgress
from iternet_monai.handlers.training_validation import TrainingValidation
from iternet_monai.handlers.vessel_map_writer import VesselMapWriter, vessel_maps, writes_outputs
from iternet_monai.handlers.weights_loader import WeightsLoader

__all__ = [
    "VesselMetricHandler",
    "PixelAUC",
    "VesselThresholdMetric",
    "Connectivity",
    "ClDice",
    "Betti0Error",
    "CAL",
    "protocol_handlers",
    "ProtocolReport",
    "nan_reason",
    "summary_table",
    "LearningRateLogger",
    "ValidationImages",
    "engine_loss",
    "every_n_steps",
    "WeightsLoader",
    "vessel_maps",
    "writes_outputs",
    "VesselMapWriter",
    "BiomarkerWriter",
    "ImageProgress",
    "StepTimer",
    "TimeBudget",
    "TrainingProgress",
    "TrainingValidation",
]
