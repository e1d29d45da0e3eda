"""The one checkpoint loader and saver: every ``model.pt`` and training checkpoint is read and written here.

Reading fails in one line that names the file (missing, empty, truncated, not a PyTorch file, no weights in it, or
weights of another network shape); float16 weights (the shipped ``model.pt``) load into the float32 network; the
weights define the network's shape (:func:`iternet_shaped_for`, which reads only their shapes, so that the weights are
loaded once, by whatever loads them next); writing is atomic (:func:`save_atomic`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from iternet_monai.networks import IterNet, describe_weights, iternet_shape, weights_mismatch
from iternet_monai.utils.errors import InputError, optional
from iternet_monai.utils.files import BUNDLE_DIR, atomic_path, bundle_weights, default_bundle_root

__all__ = [
    "CheckpointError",
    "BUNDLE_DIR",
    "default_bundle_root",
    "bundle_weights",
    "read_checkpoint",
    "read_weights",
    "weights_shape",
    "check_weights_fit",
    "load_weights",
    "iternet_shaped_for",
    "iternet_for_weights",
    "save_atomic",
]

logger = logging.getLogger(__name__)


class CheckpointError(InputError):
    """A checkpoint or weights file that cannot be used; the message names it."""


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """The dictionary saved in ``path`` (a state dict, or a training checkpoint of several state dicts).

    Args:
        path: the file.
        mmap: map the tensors' storage instead of reading it (files ``torch.save`` wrote as a zip archive, its
            format since PyTorch 1.6): their shapes are known, their values are read only when used.

    Raises:
        CheckpointError: naming the file, when it is missing, empty, damaged or not a PyTorch file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted write?)")
    with open(path, "rb") as handle:
        magic = handle.read(2)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and magic == b"PK")
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for damaged or foreign files
        why = _reason(error) if magic[:2] == b"PK" or magic[:1] == b"\x80" else "not a file torch.save wrote"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({why})") from None
    if not isinstance(content, Mapping):
        raise CheckpointError(f"{path}: holds a {type(content).__name__}, not a state dict")
    return dict(content)


def _network_state(content: Mapping, path: str | Path) -> Mapping[str, torch.Tensor]:
    """The network weights of a checkpoint's ``content``: the whole of it, or its ``"model"`` entry."""
    state = content.get("model", content)
    if not isinstance(state, Mapping) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: holds no network weights (a state dict of tensors, or one under 'model')")
    return state


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The network weights in ``path``: a plain state dict or the ``"model"`` entry of a training checkpoint,
    float16 tensors cast to float32."""
    state = _network_state(read_checkpoint(path), path)
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}


def weights_shape(state: Mapping[str, torch.Tensor], source: str | Path) -> dict:
    """The :class:`IterNet` arguments of the network ``state`` belongs to (:func:`iternet_shape`).

    Args:
        state: network weights.
        source: where they come from, named in the error.

    Raises:
        CheckpointError: naming ``source``, when ``state`` is not an IterNet's.
    """
    try:
        return iternet_shape(state)
    except (KeyError, IndexError, ValueError):
        raise CheckpointError(f"{source}: not IterNet weights ({describe_weights(state)})") from None


def check_weights_fit(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    source: str | Path | None = None,
    fix: str = "",
    strict: bool = True,
) -> None:
    """Refuse weights that do not fit a network, in one line naming both network shapes (instead of torch's
    size-mismatch line per tensor).

    Args:
        state: the weights to load.
        expected: the network's own state dict.
        source: where the weights come from, named first in the error.
        fix: what to do, appended to the error.
        strict: also refuse weights with other tensor names (as ``load_state_dict(strict=True)``).

    Raises:
        CheckpointError: when a tensor of ``state`` has another shape than the network's of that name, or, with
            ``strict``, the names differ.
    """
    mismatch = weights_mismatch(state, expected, strict)
    if mismatch:
        where = f"{source}: " if source is not None else ""
        raise CheckpointError(where + mismatch + (f"; {fix}" if fix else ""))


def load_weights(network: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load the weights of ``path`` into ``network``; weights of another shape fail in one line naming the file
    and both shapes (:func:`check_weights_fit`)."""
    state = read_weights(path)
    check_weights_fit(state, network.state_dict(), path)
    network.load_state_dict(state)
    logger.info(f"loaded weights from {path}")
    return network


def iternet_shaped_for(weights: str | Path | None = None, **config: Any) -> IterNet:
    """An IterNet of the shape of the weights in ``weights``, not loaded: the bundle's ``network_def``, into which
    the weights are loaded once by whatever runs it (:class:`~iternet_monai.handlers.WeightsLoader`, MONAI's
    ``ckpt_export``, MONAI Label). Only the tensors' shapes are read.

    Args:
        weights: a ``model.pt`` or training checkpoint; None (or ``"none"``): the config's shape, with a warning
            that the network is untrained.
        config: :class:`IterNet` arguments; the weights' shape (channels, width, iterations, refinery depth,
            norm) replaces the config's, the rest (dropout, refinery) is kept.

    Raises:
        CheckpointError: naming the file, when it is missing, unreadable or not an IterNet's.
    """
    if optional(weights) is None:
        logger.warning("no weights given: the network is UNTRAINED and its output is meaningless")
        return IterNet(**config)
    shape = weights_shape(_network_state(read_checkpoint(weights, mmap=True), weights), weights)
    differs = {k: (v, config[k]) for k, v in shape.items() if k in config and config[k] != v}
    if differs:
        logger.info(
            f"network shape taken from {weights}: "
            + ", ".join(f"{k} {v} (config: {c})" for k, (v, c) in differs.items())
        )
    return IterNet(**{**config, **shape})


def iternet_for_weights(weights: str | Path | None = None, **config: Any) -> IterNet:
    """An IterNet for ``weights`` with them loaded (:func:`iternet_shaped_for`, then :func:`load_weights`); an
    untrained one when ``weights`` is None."""
    network = iternet_shaped_for(weights, **config)
    return network if optional(weights) is None else load_weights(network, weights)


def save_atomic(content: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: ``path`` is never a partial file. The file is
    written through a Python file object, so a full disk is an OSError saying so (``torch.save`` to a path reports
    it as an unexplained "unexpected pos")."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        torch.save(content, handle)
