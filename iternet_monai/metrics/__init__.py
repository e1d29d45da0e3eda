"""Vessel segmentation metrics as MONAI cumulative metrics."""

from .vessel import THRESHOLD_METRICS, PixelAUCMetric, ThresholdMetric, confusion_counts, fov_pixels

__all__ = ["THRESHOLD_METRICS", "PixelAUCMetric", "ThresholdMetric", "confusion_counts", "fov_pixels"]
