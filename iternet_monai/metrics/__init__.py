"""Vessel segmentation metrics as MONAI cumulative metrics: pixel metrics and topology metrics."""

from .topology import (
    Betti0ErrorMetric,
    ClDiceMetric,
    ConnectivityMetric,
    betti0_error,
    cldice,
    connectivity,
    count_components,
)
from .vessel import THRESHOLD_METRICS, PixelAUCMetric, ThresholdMetric, confusion_counts, fov_pixels, pixel_auc

__all__ = [
    "THRESHOLD_METRICS",
    "PixelAUCMetric",
    "ThresholdMetric",
    "confusion_counts",
    "fov_pixels",
    "pixel_auc",
    "ConnectivityMetric",
    "ClDiceMetric",
    "Betti0ErrorMetric",
    "connectivity",
    "cldice",
    "betti0_error",
    "count_components",
]
