"""IterNet's loss: binary cross-entropy on every output (deep supervision)."""

from iternet_monai.losses.iternet_loss import (
    IterNetLoss,
    VesselLoss,
)

__all__ = [
    "VesselLoss",
    "IterNetLoss",
]
