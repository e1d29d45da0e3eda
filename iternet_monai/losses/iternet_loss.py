"""IterNet's loss: binary cross-entropy on every output, summed with equal weights (configurable)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DeepSupervisionLoss, SoftclDiceLoss
from torch import nn
from torch.nn.modules.loss import _Loss

__all__ = ["VesselLoss", "IterNetLoss"]


class VesselLoss(_Loss):
    """BCE-with-logits (soft labels allowed), plus ``cldice_weight`` times MONAI's soft clDice when positive."""

    def __init__(self, cldice_weight: float = 0.0, cldice_iterations: int = 3) -> None:
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss()
        self.cldice_weight = cldice_weight
        self.cldice = SoftclDiceLoss(iter_=cldice_iterations, sigmoid=True) if cldice_weight > 0 else None

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.bce(input, target)
        if self.cldice is not None:
            loss = loss + self.cldice_weight * self.cldice(input, target)
        return loss


class IterNetLoss(DeepSupervisionLoss):
    """Deep-supervision loss for IterNet's stacked outputs ``(B, N, C, H, W)``, the final output first (MONAI's
    ``DynUNet`` order); a plain ``(B, C, H, W)`` tensor is scored as one output. ``output_weights`` gives one weight
    per output in that order (the final output's first, the base UNet's last) and defaults to 1 for every output, as
    the released code."""

    def __init__(
        self, output_weights: Sequence[float] | None = None, cldice_weight: float = 0.0, cldice_iterations: int = 3
    ) -> None:
        super().__init__(
            VesselLoss(cldice_weight, cldice_iterations),
            weight_mode="same",
            weights=None if output_weights is None else list(output_weights),
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.ndim != target.ndim + 1:
            return super().forward(input, target)
        outputs = list(input.unbind(dim=1))
        if self.weights is not None and len(self.weights) != len(outputs):
            raise ValueError(
                f"output_weights has {len(self.weights)} entries but the network gave {len(outputs)} outputs"
            )
        return super().forward(outputs, target)
