"""IterNet (Li et al., WACV 2020): a UNet whose output is refined by weight-shared, iterated mini-UNets.

Faithful to the released Keras code (``conscienceli/IterNet`` ``get_unet``): conv -> ReLU -> Dropout units with
no normalisation, 2x2 max pooling, 2x2 transposed-conv upsampling, Glorot-uniform init, one refinery whose 3x3
convs and up-convs are shared by every iteration, and a private 1x1 reduction and 1x1 head per iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from monai.networks.blocks import Convolution, UpSample
from monai.utils import ComponentStore
from torch import nn

__all__ = [
    "IterNet",
    "MiniUNet",
    "REFINERIES",
    "register_refinery",
    "conv_block",
    "iternet_shape",
    "describe_weights",
    "WeightsShapeError",
    "weights_mismatch",
]


class WeightsShapeError(ValueError):
    """Weights of another network shape given to :meth:`IterNet.load_state_dict`; the message names both shapes."""


REFINERIES = ComponentStore("Refinery", "IterNet refinery modules, selected by name with IterNet(refinery=...)")


def register_refinery(name: str) -> Callable:
    """Decorator registering a refinery class under ``name`` so a bundle config can select it by name.

    A refinery is built as ``cls(features=int, depth=int, dropout=float, norm=...)`` and must have a ``stem``
    submodule (``features -> features`` channels, applied to the previous module's last decoder features; its
    output joins the dense skip list) and a ``forward(x)`` mapping the reduced ``features``-channel map to the
    next ``features``-channel decoder map at the same resolution.
    """
    return REFINERIES.add_def(name, f"IterNet refinery '{name}'")


def conv_block(in_channels: int, out_channels: int, dropout: float, norm: str | tuple | None) -> nn.Sequential:
    """Two 3x3 conv units, each conv -> [norm] -> ReLU -> Dropout (the released code's order, no norm)."""
    return nn.Sequential(
        *(
            Convolution(
                2, c_in, out_channels, kernel_size=3, act="relu", norm=norm, dropout=dropout, adn_ordering="NAD"
            )
            for c_in in (in_channels, out_channels)
        )
    )


class _UpStage(nn.Module):
    """Transposed-conv upsampling, concat ``[upsampled, skip]``, then a conv block."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, norm: str | tuple | None) -> None:
        super().__init__()
        self.up = UpSample(2, in_channels, out_channels, scale_factor=2, mode="deconv")
        self.block = conv_block(2 * out_channels, out_channels, dropout, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class _UNetPath(nn.Module):
    """Encoder/decoder below a full-resolution level: ``widths[0]`` channels in and out, ``len(widths)-1`` poolings."""

    def __init__(self, widths: list[int], dropout: float, norm: str | tuple | None) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.down = nn.ModuleList(conv_block(a, b, dropout, norm) for a, b in zip(widths[:-1], widths[1:]))
        self.up = nn.ModuleList(_UpStage(b, a, dropout, norm) for a, b in reversed(list(zip(widths[:-1], widths[1:]))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for block in self.down:
            x = block(self.pool(x))
            skips.append(x)
        skips.pop()
        for i, stage in enumerate(self.up):
            x = stage(x, skips[len(skips) - 1 - i])
        return x


@register_refinery("mini_unet")
class MiniUNet(nn.Module):
    """The released code's refinery: a mini-UNet with ``depth`` poolings (2 in the code, 3 in the paper's Fig. 2)."""

    def __init__(self, features: int = 32, depth: int = 2, dropout: float = 0.1, norm: str | tuple | None = None):
        super().__init__()
        self.stem = conv_block(features, features, dropout, norm)
        self.path = _UNetPath([features * 2**level for level in range(depth + 1)], dropout, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.path(x)


class _IterationLayers(nn.Module):
    """The layers private to one refinement iteration: the 1x1 dimension reduction and the 1x1 output head."""

    def __init__(self, in_channels: int, features: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, features, kernel_size=1)
        self.head = nn.Conv2d(features, out_channels, kernel_size=1)


class IterNet(nn.Module):
    """IterNet, with MONAI's ``DynUNet`` deep-supervision contract. Training mode returns every output's logits
    stacked on dim 1, ``(B, iterations + 1, C, H, W)``, the final output first, then the earlier iterations' from the
    last to the first, the base UNet's last; eval mode returns only the final logits ``(B, C, H, W)``, so sliding
    window, MONAI Label and TorchScript see one tensor.

    Args:
        in_channels: image channels (3 for RGB fundus photographs).
        out_channels: output channels per head.
        features: base width k; the base UNet uses k..16k, the refinery k..k*2**depth (32 in the paper).
        iterations: refinement iterations; the network has ``iterations + 1`` outputs.
        depth: refinery poolings, 2 as the released code, 3 as the paper's Fig. 2.
        dropout: dropout after every 3x3 conv unit.
        norm: optional MONAI norm after every 3x3 conv (``None`` as the released code), e.g. ``"batch"``.
        refinery: name of the refinery in :data:`REFINERIES`.

    The default configuration has exactly the released code's 8,244,356 parameters. Input height and width must be
    multiples of 16.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        features: int = 32,
        iterations: int = 3,
        depth: int = 2,
        dropout: float = 0.1,
        norm: str | tuple | None = None,
        refinery: str = "mini_unet",
    ) -> None:
        super().__init__()
        if refinery not in REFINERIES:
            raise ValueError(f"unknown refinery '{refinery}'; registered: {', '.join(REFINERIES.names)}")
        if iterations < 0 or depth < 1 or features < 1:
            raise ValueError(f"need iterations >= 0, depth >= 1, features >= 1; got {iterations}, {depth}, {features}")
        self.size_divisor = 16
        self.first = conv_block(in_channels, features, dropout, norm)
        self.base = _UNetPath([features * 2**level for level in range(5)], dropout, norm)
        self.head = nn.Conv2d(features, out_channels, kernel_size=1)
        self.refinery = REFINERIES[refinery](features=features, depth=depth, dropout=dropout, norm=norm)
        self.iterations = nn.ModuleList(
            _IterationLayers(features * (i + 2), features, out_channels) for i in range(iterations)
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """torch's, with weights of another IterNet shape refused in one line naming both shapes (instead of a
        size-mismatch message per tensor), wherever they are loaded: MONAI's ``ckpt_export``, MONAI Label, ..."""
        mismatch = weights_mismatch(state_dict, self.state_dict(), strict)
        if mismatch:
            raise WeightsShapeError(
                f"{mismatch}; build the network from the weights (iternet_for_weights; with MONAI's ckpt_export, give "
                "the file as --ckpt_path too)"
            )
        return super().load_state_dict(state_dict, strict, assign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        if height % self.size_divisor != 0 or width % self.size_divisor != 0:
            raise ValueError(
                f"IterNet needs height and width divisible by {self.size_divisor}, got {height}x{width}; "
                "pad the image or use a sliding-window or whole-image inferer that pads"
            )
        first_level = self.first(x)
        features = self.base(first_level)
        outputs = [self.head(features)]
        dense = [first_level]
        for layers in self.iterations:
            dense.append(self.refinery.stem(features))
            features = self.refinery(layers.reduce(torch.cat(dense, dim=1)))
            outputs.insert(0, layers.head(features))  # the final output first, as DynUNet's
        if self.training:
            return torch.stack(outputs, dim=1)
        return outputs[0]


def iternet_shape(state: Mapping[str, torch.Tensor]) -> dict:
    """The :class:`IterNet` arguments that give a network shaped like ``state`` (channels, width, iterations,
    refinery depth, batch norm or none). Raises KeyError when ``state`` is not an IterNet's."""
    out_channels, features = state["head.weight"].shape[:2]
    return {
        "in_channels": int(state["first.0.conv.weight"].shape[1]),
        "out_channels": int(out_channels),
        "features": int(features),
        "iterations": len({k.split(".")[1] for k in state if k.startswith("iterations.")}),
        "depth": max(1, len({k.split(".")[3] for k in state if k.startswith("refinery.path.down.")})),
        "norm": "batch" if any(k.endswith("running_mean") for k in state) else None,
    }


def describe_weights(state: Mapping[str, torch.Tensor]) -> str:
    """A short description of the network shape ``state`` belongs to, e.g. ``IterNet(features=4, iterations=3,
    depth=2)``; for weights of another network, their tensor count."""
    try:
        shape = iternet_shape(state)
    except (KeyError, IndexError, ValueError):
        return f"a network of {len(state)} tensors that is not an IterNet"
    defaults = {"in_channels": 3, "out_channels": 1, "norm": None}
    return "IterNet(" + ", ".join(f"{k}={v}" for k, v in shape.items() if defaults.get(k, "-") != v) + ")"


def weights_mismatch(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], strict: bool = True
) -> str | None:
    """Why ``state`` does not fit a network whose own weights are ``expected`` (a tensor of another shape, or, with
    ``strict``, other tensor names), in one phrase naming both network shapes; None when it fits.

    Args:
        state: the weights to load.
        expected: the network's own state dict.
        strict: also compare the tensor names, as ``load_state_dict(strict=True)``.
    """
    if any(key in expected and expected[key].shape != value.shape for key, value in state.items()) or (
        strict and set(state) != set(expected)
    ):
        return f"the weights are for {describe_weights(state)} but the network is {describe_weights(expected)}"
    return None
