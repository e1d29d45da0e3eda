"""Inferers: MONAI's sliding window (the paper's stride-3 mode) and a whole-image inferer, chosen by ``mode``.

The whole-image inferer is ours: MONAI has no inferer that pads an image to the network's size multiple, runs it
once and crops back.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SlidingWindowInferer

from .errors import InputError

__all__ = [
    "INFERENCE_MODES",
    "BACKENDS",
    "prepare_network",
    "OnnxRuntimeNetwork",
    "WholeImageInferer",
    "FlipAveragingInferer",
    "resolve_mode",
    "make_inferer",
    "sliding_window_count",
]

logger = logging.getLogger(__name__)
INFERENCE_MODES = ("auto", "sliding_window", "whole_image")
BACKENDS = ("pytorch", "onnxruntime")


class WholeImageInferer(Inferer):
    """Run the network once on the whole image, zero-padded at the bottom and right to a multiple of ``divisor``,
    and crop the output back (channels-last, which speeds up convolutions). Images above ``max_pixels`` are run in
    overlapping ``tile``-sized windows blended with Gaussian weights, so memory stays bounded whatever their size."""

    def __init__(self, divisor: int = 16, max_pixels: int = 2048 * 2048, tile: int = 1024, sw_batch_size: int = 1):
        super().__init__()
        self.divisor, self.max_pixels = divisor, max_pixels
        self.tiled = SlidingWindowInferer((tile, tile), sw_batch_size, overlap=0.125, mode="gaussian")

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        height, width = inputs.shape[-2:]
        pad_h, pad_w = -height % self.divisor, -width % self.divisor
        if (height + pad_h) * (width + pad_w) > self.max_pixels:
            return self.tiled(inputs, network, *args, **kwargs)
        padded = F.pad(inputs, (0, pad_w, 0, pad_h)).contiguous(memory_format=torch.channels_last)
        return network(padded, *args, **kwargs)[..., :height, :width]


class FlipAveragingInferer(Inferer):
    """Test-time augmentation: the mean of ``inferer``'s logits over the image and its horizontal, vertical and
    double flips (flipped back), as VascX does around MONAI's sliding window. Costs four passes. Ours: MONAI's
    ``TestTimeAugmentation`` draws random transforms for uncertainty rather than averaging a fixed set."""

    FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))

    def __init__(self, inferer: Inferer) -> None:
        super().__init__()
        self.inferer = inferer

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        total = None
        for dims in self.FLIPS:
            flipped = inputs.flip(dims) if dims else inputs
            logits = self.inferer(flipped, network, *args, **kwargs)
            logits = (logits.flip(dims) if dims else logits).float()
            total = logits if total is None else total + logits
        return total / len(self.FLIPS)


def resolve_mode(mode: str, device: torch.device | str) -> str:
    """``auto`` is the paper's sliding window on CUDA and whole-image on CPU (where stride 3 takes hours)."""
    if mode not in INFERENCE_MODES:
        raise InputError(f"unknown inference mode '{mode}'; choose one of {', '.join(INFERENCE_MODES)}")
    if mode == "auto":
        return "sliding_window" if torch.device(device).type == "cuda" else "whole_image"
    return mode


def make_inferer(
    mode: str = "auto",
    device: torch.device | str = "cpu",
    roi_size: Sequence[int] = (128, 128),
    overlap: float = 0.9765625,
    sw_batch_size: int = 64,
    tta: bool = False,
    buffer_steps: int | None = None,
) -> Inferer:
    """The inferer for ``mode`` (see :func:`resolve_mode`), wrapped in :class:`FlipAveragingInferer` with ``tta``;
    logs which one runs and at what stride. ``buffer_steps`` is MONAI's buffered stitching of windows (rows of
    windows gathered on the device before they are added to the output), a GPU speed option."""
    mode = resolve_mode(mode, device)
    flips = ", flip averaging (4 passes)" if tta else ""
    if mode == "whole_image":
        logger.info(f"inference mode: whole_image (one pass per image, padded to a multiple of 16){flips}")
        inferer: Inferer = WholeImageInferer()
    else:
        stride = max(1, int(roi_size[0] * (1 - overlap)))
        logger.info(
            f"inference mode: sliding_window, roi {list(roi_size)}, overlap {overlap} (stride {stride}), "
            f"mode constant{flips}"
        )
        inferer = SlidingWindowInferer(
            roi_size, sw_batch_size, overlap, mode="constant", progress=False, buffer_steps=buffer_steps
        )
    return FlipAveragingInferer(inferer) if tta else inferer


def sliding_window_count(height: int, width: int, roi: int = 128, overlap: float = 0.9765625) -> int:
    """Windows MONAI's sliding window runs over an image (22,491 for DRIVE at stride 3)."""
    stride = max(1, int(roi * (1 - overlap)))
    return math.prod(math.ceil((size - roi) / stride) + 1 for size in (height, width))


class OnnxRuntimeNetwork(torch.nn.Module):
    """``network`` run by ONNX Runtime on the CPU, the opt-in ``backend="onnxruntime"`` (faster than PyTorch on
    the 2-core development CPU: docs/benchmarks.md). The ONNX file is exported once per weights with MONAI's
    ``convert_to_onnx`` (height and width dynamic) and kept in ``cache_dir``."""

    def __init__(self, network: torch.nn.Module, cache_dir: str | Path | None = None) -> None:
        super().__init__()
        import onnxruntime

        from .files import atomic_path

        digest = hashlib.sha256()
        for name, tensor in sorted(network.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        folder = Path(cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iternet-monai")
        path = folder / f"iternet-{digest.hexdigest()[:16]}.onnx"
        if not path.is_file():
            from monai.networks.utils import convert_to_onnx

            logger.info(f"exporting the network to ONNX once: {path}")
            folder.mkdir(parents=True, exist_ok=True)
            sample = torch.rand(1, next(network.parameters()).shape[1], 64, 64)
            with atomic_path(path) as temporary:
                convert_to_onnx(
                    network.cpu().eval(),
                    inputs=[sample],
                    input_names=["image"],
                    output_names=["logits"],
                    dynamic_axes={"image": {2: "width", 3: "height"}, "logits": {2: "width", 3: "height"}},
                    filename=str(temporary),
                    verify=False,
                    opset_version=18,
                    external_data=False,
                )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = torch.as_tensor(x).detach().float().cpu().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {"image": image})[0])


def prepare_network(
    network: torch.nn.Module, device: torch.device | str = "cpu", backend: str = "pytorch", compile: bool = False
) -> torch.nn.Module:
    """``network`` ready for inference on ``device``: eval mode, channels-last (1.5x faster convolutions on a CPU,
    and what cuDNN's fastest kernels want), optionally compiled with ``torch.compile``; or, with
    ``backend="onnxruntime"`` (CPU only), run by :class:`OnnxRuntimeNetwork`."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    network = network.eval()
    if backend == "onnxruntime":
        if torch.device(device).type != "cpu":
            raise InputError(f"backend onnxruntime runs on the CPU only; got device {device}")
        return OnnxRuntimeNetwork(network)
    network = network.to(device, memory_format=torch.channels_last)
    return torch.compile(network) if compile else network
