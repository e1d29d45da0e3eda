"""Vessel segmentation metrics as MONAI cumulative metrics: pixel metrics and topology metrics."""

from iternet_monai.metrics.protocol import POOLED_METRICS, protocol_metrics, protocol_rules
from iternet_monai.metrics.topology import (
    CAL_COMPONENTS,
    Betti0ErrorMetric,
    CALMetric,
    ClDiceMetric,
    ConnectivityMetric,
    betti0_error,
    cal,
    cldice,
    connectivity,
    count_components,
)
from iternet_monai.metrics.vessel import (
    THRESHOLD_METRICS,
    PixelAUCMetric,
    ThresholdMetric,
    confusion_counts,
    fov_pixels,
    pixel_auc,
)

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
    "CALMetric",
    "CAL_COMPONENTS",
    "cal",
    "POOLED_METRICS",
    "protocol_metrics",
    "protocol_rules",
]
