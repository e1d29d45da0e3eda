"""Ignite handlers: thin wrappers of :mod:`iternet_monai.metrics`, the evaluation's report, batch inference's
weights loader, writers and progress bar, and the training's helpers."""

from iternet_monai.handlers.biomarker_writer import BiomarkerWriter
from iternet_monai.handlers.image_progress import ImageProgress
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
from iternet_monai.handlers.protocol_report import ProtocolReport, nan_reason
from iternet_monai.handlers.report_files import summary_table
from iternet_monai.handlers.vessel_map_writer import VesselMaps, VesselMapWriter, overlay, vessel_maps, writes_outputs
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
    "VesselMaps",
    "vessel_maps",
    "writes_outputs",
    "overlay",
    "VesselMapWriter",
    "BiomarkerWriter",
    "ImageProgress",
]
