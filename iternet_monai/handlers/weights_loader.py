"""Loading a network's weights when an engine starts, as MONAI's ``CheckpointLoader`` does."""

from __future__ import annotations

from pathlib import Path

import torch
from ignite.engine import Engine, Events

from iternet_monai.engines.checkpoints import load_weights
from iternet_monai.utils.errors import optional

__all__ = ["WeightsLoader"]


class WeightsLoader:
    """Ignite handler: loads the network weights of ``load_path`` (a ``model.pt`` or the ``"model"`` entry of a
    training checkpoint) into ``network`` when the engine starts, MONAI's ``CheckpointLoader`` for the bundle's
    inference; nothing when ``load_path`` is None (an untrained network, which says so when it is built).

    Ours: it reads through :mod:`iternet_monai.engines.checkpoints`, so a missing, damaged or foreign file, or weights
    of another network shape, end the run in one line naming the file (MONAI's gives torch's traceback), float16
    weights load into the float32 network, and :meth:`load` needs no engine
    (:func:`iternet_monai.engines.load_pipeline`).

    Args:
        load_path: the weights file, or None.
        network: the network to load them into (the bundle's ``network_def``, shaped for them by
            :func:`~iternet_monai.engines.iternet_shaped_for`).
    """

    def __init__(self, load_path: str | Path | None, network: torch.nn.Module) -> None:
        self.load_path, self.network = optional(load_path), network

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.load()

    def load(self) -> torch.nn.Module:
        """Load the weights now; the network, loaded."""
        if self.load_path is not None:
            load_weights(self.network, self.load_path)
        return self.network
