"""The batch inference writer: the vessel maps of every image an evaluator has segmented."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from iternet_monai.data.maps import VesselMaps, save_vessel_maps
from iternet_monai.utils.errors import flag, optional

__all__ = ["vessel_maps", "writes_outputs", "VesselMapWriter"]

logger = logging.getLogger(__name__)


def vessel_maps(output: Mapping[str, Any]) -> VesselMaps:
    """The maps of one evaluator output: ``prob`` (1, W, H), ``pred`` and ``image`` (3, W, H), as MONAI loads them.

    Args:
        output: one decollated item of the evaluator's ``state.output``.
    """
    prob = torch.as_tensor(output["prob"]).float().squeeze(0).cpu().numpy()
    mask = torch.as_tensor(output["pred"]).reshape(prob.shape).cpu().numpy() > 0
    photo = torch.as_tensor(output["image"]).float().cpu().numpy()
    return VesselMaps(prob.T, mask.T, np.round(photo.transpose(2, 1, 0) * 255).astype(np.uint8))


def writes_outputs(weights: str | Path | None, allow_untrained: bool | str) -> bool:
    """Whether a run writes its outputs: with trained ``weights``, or an untrained network and ``allow_untrained``
    (its output would look like a segmentation and mean nothing)."""
    return optional(weights) is not None or flag(allow_untrained, "allow_untrained")


class VesselMapWriter:
    """Ignite handler that writes, for every image an evaluator has segmented, its probability map, the
    postprocessing's binary ``pred``, an overlay and, with ``nifti``, a NIfTI map, each atomically
    (:func:`~iternet_monai.data.maps.save_vessel_maps`).

    Ours: MONAI's ``SaveImaged`` writes one array per transform, not atomically, and names files by its own rule.
    An untrained network (``weights`` None) writes nothing unless ``allow_untrained`` (:func:`writes_outputs`).

    Args:
        output_dir: the folder written to.
        nifti: write the float32 NIfTI map too.
        weights: the weights the network runs (None: untrained).
        allow_untrained: write the outputs of an untrained network.
    """

    def __init__(
        self,
        output_dir: str | Path,
        nifti: bool = False,
        weights: str | None = None,
        allow_untrained: bool = False,
    ) -> None:
        self.output_dir, self.nifti = Path(output_dir), flag(nifti, "nifti")
        self.write = writes_outputs(weights, allow_untrained)
        self.count = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.summary)

    def __call__(self, engine: Engine) -> None:
        for item, output in zip(engine.state.batch, engine.state.output):
            self.count += 1
            if self.write:
                save_vessel_maps(self.output_dir, item["name"], vessel_maps(output), self.nifti)

    def summary(self, engine: Engine) -> None:
        if self.write:
            logger.info(f"wrote the outputs of {self.count} image(s) to {self.output_dir}")
        else:
            logger.warning(
                f"no trained weights: ran the UNTRAINED network on {self.count} image(s) to check the pipeline and "
                "wrote nothing (its output would look like a segmentation and mean nothing). Pass --ckpt_path with "
                "a trained model.pt, or --allow_untrained true to write the untrained outputs anyway."
            )
