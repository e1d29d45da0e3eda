"""Networks: IterNet and its registry of refinery modules."""

from iternet_monai.networks.iternet import (
    REFINERIES,
    IterNet,
    MiniUNet,
    WeightsShapeError,
    describe_weights,
    iternet_shape,
    register_refinery,
    weights_mismatch,
)

__all__ = [
    "IterNet",
    "MiniUNet",
    "REFINERIES",
    "register_refinery",
    "iternet_shape",
    "describe_weights",
    "WeightsShapeError",
    "weights_mismatch",
]
