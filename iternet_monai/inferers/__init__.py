"""Inferers: MONAI's sliding window (the paper's stride-3 mode), a whole-image inferer, the backends and
an inferer of saved maps."""

from iternet_monai.inferers.inferer import (
    BACKENDS,
    INFERENCE_MODES,
    ONNX_EXPORT,
    PAPER_OVERLAP,
    STITCHINGS,
    BatchedSlidingWindowInferer,
    FlipAveragingInferer,
    OnnxRuntimeNetwork,
    WholeImageInferer,
    make_inferer,
    prepare_network,
    resolve_backend,
    resolve_mode,
    sliding_window_count,
)
from iternet_monai.inferers.stored_map import BINARY_NOTE, StoredMapInferer, stored_maps_or

__all__ = [
    "PAPER_OVERLAP",
    "ONNX_EXPORT",
    "INFERENCE_MODES",
    "BACKENDS",
    "STITCHINGS",
    "prepare_network",
    "OnnxRuntimeNetwork",
    "WholeImageInferer",
    "BatchedSlidingWindowInferer",
    "FlipAveragingInferer",
    "resolve_mode",
    "resolve_backend",
    "make_inferer",
    "sliding_window_count",
    "BINARY_NOTE",
    "StoredMapInferer",
    "stored_maps_or",
]
