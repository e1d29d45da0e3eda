"""Inferers: MONAI's sliding window (the paper's stride-3 mode) and a whole-image inferer, chosen by ``mode``.

The whole-image inferer is ours: MONAI has no inferer that pads an image to the network's size multiple, runs it
once and crops back. :class:`BatchedSlidingWindowInferer` is MONAI's sliding window with its stitching done per
batch of windows instead of per window.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.data.utils import dense_patch_slices
from monai.inferers import Inferer, SlidingWindowInferer
from monai.utils import convert_to_dst_type, ensure_tuple_rep, fall_back_tuple
from tqdm import tqdm

from iternet_monai.utils.errors import InputError, flag

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
]

logger = logging.getLogger(__name__)
# The paper's inference: 128x128 windows at stride 3, i.e. an overlap of 1 - 3/128 (0.9765625).
PAPER_OVERLAP = 1 - 3 / 128
# MONAI's convert_to_onnx options of every ONNX export: input and output named, width and height dynamic, one file.
ONNX_EXPORT: dict[str, Any] = {
    "input_names": ["image"],
    "output_names": ["logits"],
    "dynamic_axes": {"image": {0: "batch", 2: "width", 3: "height"}, "logits": {0: "batch", 2: "width", 3: "height"}},
    "opset_version": 18,
    "external_data": False,
}
INFERENCE_MODES = ("auto", "sliding_window", "whole_image")
BACKENDS = ("auto", "pytorch", "onnxruntime")
STITCHINGS = ("batched", "monai")


class WholeImageInferer(Inferer):
    """Run the network once on the whole image, zero-padded at the bottom and right to a multiple of ``divisor``,
    and crop the output back (channels-last, which speeds up convolutions). Images above ``max_pixels`` are run in
    overlapping ``tile``-sized windows blended with Gaussian weights, so memory stays bounded whatever their size;
    with ``progress``, MONAI's bar then counts the tiles."""

    def __init__(
        self,
        divisor: int = 16,
        max_pixels: int = 2048 * 2048,
        tile: int = 1024,
        sw_batch_size: int = 1,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.divisor, self.max_pixels = divisor, max_pixels
        self.tiled = SlidingWindowInferer(
            (tile, tile), sw_batch_size, overlap=0.125, mode="gaussian", progress=progress
        )

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        height, width = inputs.shape[-2:]
        pad_h, pad_w = -height % self.divisor, -width % self.divisor
        if (height + pad_h) * (width + pad_w) > self.max_pixels:
            return self.tiled(inputs, network, *args, **kwargs)
        padded = F.pad(inputs, (0, pad_w, 0, pad_h)).contiguous(memory_format=torch.channels_last)
        return network(padded, *args, **kwargs)[..., :height, :width]


class BatchedSlidingWindowInferer(SlidingWindowInferer):
    """MONAI's ``SlidingWindowInferer`` with constant blending (the same windows, the same averages) that cuts out
    whole rows of windows with one gather and adds them back with one ``fold`` (PyTorch's col2im) per regular block
    of the window grid. Ours: MONAI stitches window by window in Python, about 26 tensor operations per window, a
    cost a GPU does not lower (0.6 s for 22,338 windows on the 2-core CPU, ``benchmarks/stitching.py``) and stride
    3 has 22,491 windows per DRIVE image, whose network FLOP take about 0.5 s on an H100. The windows reach the
    network channels-last. With ``progress``, a bar counts the windows done (it disappears when the image is done).
    Anything else (Gaussian blending, 3-D, an image smaller than the window, ``sw_device``/``device``, extra
    network arguments, a network that does not return one 4-D tensor) runs MONAI's own loop."""

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        spatial = tuple(inputs.shape[2:])
        roi = fall_back_tuple(self.roi_size, spatial)
        if (
            self.mode != "constant"
            or len(spatial) != 2
            or any(size < r for size, r in zip(spatial, roi))
            or self.sw_device is not None
            or self.device is not None
            or args
            or kwargs
        ):
            return super().__call__(inputs, network, *args, **kwargs)
        overlap = ensure_tuple_rep(self.overlap, 2)
        interval = [r if r == size else max(1, int(r * (1 - o))) for size, r, o in zip(spatial, roi, overlap)]
        windows = dense_patch_slices(spatial, roi, interval)
        ys = sorted({int(w[0].start) for w in windows})  # MONAI's grid: every row start with every column start
        xs = sorted({int(w[1].start) for w in windows})
        images = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        outputs = []
        with tqdm(
            total=len(windows) * len(images), desc="windows", unit="window", leave=False, disable=not self.progress
        ) as bar:
            for image in images:
                output = self._stitch(image, network, roi, interval, ys, xs, bar)
                if output is None:
                    return super().__call__(inputs, network)
                outputs.append(output)
        output = torch.stack(outputs)
        if isinstance(inputs, MetaTensor):  # as MONAI: the input's metadata, not its batch attributes
            return convert_to_dst_type(output, MetaTensor([]).copy_meta_from(inputs, copy_attr=False))[0]
        return output

    def _stitch(
        self,
        image: torch.Tensor,
        network: Callable[..., torch.Tensor],
        roi: Sequence[int],
        interval: Sequence[int],
        ys: list[int],
        xs: list[int],
        bar: tqdm,
    ) -> torch.Tensor | None:
        """The windows' average logits over ``image`` (C, H, W); None when the network's output is not 4-D."""
        (height, width), device = image.shape[1:], image.device
        # Every window as a view: (row start, column start, window row, window column, channel).
        views = image.permute(1, 2, 0).contiguous().unfold(0, roi[0], 1).unfold(1, roi[1], 1).permute(0, 1, 3, 4, 2)
        column_runs = _regular_runs(xs, interval[1])
        columns = torch.tensor(xs, device=device)
        rows_per_chunk = max(1, self.sw_batch_size // len(xs))
        total = None
        for row_run in _regular_runs(ys, interval[0]):
            for first in range(0, len(row_run), rows_per_chunk):
                rows = row_run[first : first + rows_per_chunk]
                windows = views[torch.tensor(rows, device=device)[:, None], columns[None, :]]
                windows = windows.reshape(-1, *windows.shape[2:]).permute(0, 3, 1, 2)  # channels-last, no copy
                logits = [network(batch) for batch in windows.split(self.sw_batch_size)]
                if not all(isinstance(x, torch.Tensor) and x.ndim == 4 for x in logits):
                    return None
                logits = torch.cat(logits).float().unflatten(0, (len(rows), len(xs)))
                bar.update(len(rows) * len(xs))
                if total is None:
                    total = torch.zeros(logits.shape[2], height, width, device=device)
                start = 0
                for run in column_runs:  # one fold per regular block: sums the overlapping windows
                    block = logits[:, start : start + len(run)].flatten(0, 1)
                    start += len(run)
                    size = ((len(rows) - 1) * interval[0] + roi[0], (len(run) - 1) * interval[1] + roi[1])
                    folded = F.fold(
                        block.flatten(1).T[None], size, kernel_size=roi, stride=interval
                    )  # (1, channels, *size)
                    total[:, rows[0] : rows[0] + size[0], run[0] : run[0] + size[1]] += folded[0]
        counts = [_coverage(starts, r, n, device) for starts, r, n in ((ys, roi[0], height), (xs, roi[1], width))]
        return total / (counts[0][:, None] * counts[1][None, :])


def _regular_runs(starts: Sequence[int], step: int) -> list[list[int]]:
    """``starts`` split where the step changes: MONAI's grid is regular but for a last window moved to the edge."""
    runs = [[starts[0]]]
    for previous, start in zip(starts, starts[1:]):
        if start - previous == step:
            runs[-1].append(start)
        else:
            runs.append([start])
    return runs


def _coverage(starts: Sequence[int], roi: int, size: int, device: torch.device) -> torch.Tensor:
    """How many windows starting at ``starts`` (each ``roi`` long) cover each of ``size`` positions."""
    steps = torch.zeros(size + 1, device=device)
    index = torch.tensor(starts, device=device)
    steps.index_add_(0, index, torch.ones(len(starts), device=device))
    steps.index_add_(0, index + roi, -torch.ones(len(starts), device=device))
    return steps.cumsum(0)[:size]


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
    overlap: float = PAPER_OVERLAP,
    sw_batch_size: int = 64,
    tta: bool = False,
    buffer_steps: int | None = None,
    stitching: str = "batched",
) -> Inferer:
    """The inferer for ``mode`` (see :func:`resolve_mode`), wrapped in :class:`FlipAveragingInferer` with ``tta``;
    logs which one runs and at what stride. The sliding window's ``stitching`` is ``batched``
    (:class:`BatchedSlidingWindowInferer`) or ``monai`` (MONAI's window-by-window loop, to compare with), whose
    ``buffer_steps`` option gathers rows of windows on the device before adding them to the output."""
    mode, tta = resolve_mode(mode, device), flag(tta, "tta")
    if stitching not in STITCHINGS:
        raise InputError(f"unknown stitching '{stitching}'; choose one of {', '.join(STITCHINGS)}")
    if buffer_steps and stitching != "monai":
        raise InputError("buffer_steps is an option of MONAI's stitching: pass stitching monai with it")
    flips = ", flip averaging (4 passes)" if tta else ""
    if mode == "whole_image":
        logger.info(f"inference mode: whole_image (one pass per image, padded to a multiple of 16){flips}")
        inferer: Inferer = WholeImageInferer(progress=True)
    else:
        stride = max(1, int(roi_size[0] * (1 - overlap)))
        logger.info(
            f"inference mode: sliding_window, roi {list(roi_size)}, overlap {overlap} (stride {stride}), "
            f"mode constant, {stitching} stitching{flips}"
        )
        window = BatchedSlidingWindowInferer if stitching == "batched" else SlidingWindowInferer
        options = {"buffer_steps": buffer_steps} if buffer_steps else {}
        inferer = window(roi_size, sw_batch_size, overlap, mode="constant", progress=True, **options)
    return FlipAveragingInferer(inferer) if tta else inferer


def sliding_window_count(height: int, width: int, roi: int = 128, overlap: float = PAPER_OVERLAP) -> int:
    """Windows MONAI's sliding window runs over an image (22,491 for DRIVE at stride 3)."""
    stride = max(1, int(roi * (1 - overlap)))
    return math.prod(math.ceil((size - roi) / stride) + 1 for size in (height, width))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The ONNX exporter logs each of its passes and warns about what it does not need (torchvision, deprecations);
    a user needs only the one line saying the export runs. Errors still show."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class OnnxRuntimeNetwork(torch.nn.Module):
    """``network`` run by ONNX Runtime on the CPU: ``backend="onnxruntime"``, and ``auto``'s choice on a CPU where
    ONNX Runtime is installed (faster than PyTorch there, same output within 1e-4: docs/benchmarks.md). The ONNX
    file is exported at the first call, so it holds the weights loaded by then (the bundle loads them when its
    evaluator starts), once per weights with MONAI's ``convert_to_onnx`` (:data:`ONNX_EXPORT`), and kept in
    ``cache_dir``."""

    def __init__(self, network: torch.nn.Module, cache_dir: str | Path | None = None) -> None:
        super().__init__()
        import onnxruntime  # noqa: F401 - a missing install fails here, not at the first image

        self.network = network
        default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iternet-monai"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default
        self.session: Any = None

    def _export(self) -> Path:
        """The ONNX file of the network's current weights, exported unless the cache has it."""
        digest = hashlib.sha256(repr(ONNX_EXPORT).encode())  # new export settings, a new file
        for name, tensor in sorted(self.network.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        path = self.cache_dir / f"iternet-{digest.hexdigest()[:16]}.onnx"
        if not path.is_file():
            from monai.networks.utils import convert_to_onnx

            from iternet_monai.utils.files import atomic_path

            logger.info(f"exporting the network to ONNX once: {path}")
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            # a batch of 2: the exporter would fix a dimension of 1 as a constant (windows come in batches)
            sample = torch.rand(2, next(self.network.parameters()).shape[1], 64, 64)
            with atomic_path(path) as temporary, _quiet_exporter():
                convert_to_onnx(
                    self.network.cpu().eval(),
                    inputs=[sample],
                    filename=str(temporary),
                    verify=False,
                    verbose=False,
                    **ONNX_EXPORT,
                )
        return path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            self.session = onnxruntime.InferenceSession(
                str(self._export()), options, providers=["CPUExecutionProvider"]
            )
        image = torch.as_tensor(x).detach().float().cpu().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {ONNX_EXPORT["input_names"][0]: image})[0])


def resolve_backend(backend: str, device: torch.device | str = "cpu") -> str:
    """``auto``: ONNX Runtime on a CPU where it is installed (the ``onnx`` extra), PyTorch otherwise."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    on_cpu = torch.device(device).type == "cpu"
    return "onnxruntime" if on_cpu and importlib.util.find_spec("onnxruntime") is not None else "pytorch"


def prepare_network(
    network: torch.nn.Module, device: torch.device | str = "cpu", backend: str = "auto", compile: bool = False
) -> torch.nn.Module:
    """``network`` ready for inference on ``device``: eval mode, channels-last (1.5x faster convolutions on a CPU,
    and what cuDNN's fastest kernels want), optionally compiled with ``torch.compile``; or, with the ``onnxruntime``
    backend (CPU only; ``auto`` picks it on a CPU where it is installed), run by :class:`OnnxRuntimeNetwork`."""
    network, compile, backend = network.eval(), flag(compile, "compile"), resolve_backend(backend, device)
    if backend == "onnxruntime":
        if torch.device(device).type != "cpu":
            raise InputError(f"backend onnxruntime runs on the CPU only; got device {device}")
        return OnnxRuntimeNetwork(network)
    network = network.to(device, memory_format=torch.channels_last)
    return torch.compile(network) if compile else network
