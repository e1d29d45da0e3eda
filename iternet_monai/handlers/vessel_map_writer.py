"""The batch inference writer: the vessel maps of every image an evaluator has segmented."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from ignite.engine import Engine, Events
from PIL import Image

from iternet_monai.data.inference_inputs import output_paths
from iternet_monai.utils.errors import flag, optional
from iternet_monai.utils.files import atomic_path

__all__ = ["VesselMaps", "vessel_maps", "writes_outputs", "overlay", "VesselMapWriter"]

logger = logging.getLogger(__name__)


class VesselMaps(NamedTuple):
    """One segmented image in the photograph's (H, W) orientation."""

    probability: np.ndarray  # float32 in [0, 1]
    mask: np.ndarray  # bool
    photo: np.ndarray  # (H, W, 3) uint8


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


def overlay(
    photo: np.ndarray, mask: np.ndarray, colour: Sequence[int] = (0, 255, 64), alpha: float = 0.6
) -> np.ndarray:
    """The photograph (H, W, 3 uint8) with ``mask`` pixels blended towards ``colour``.

    Args:
        photo: the photograph.
        mask: (H, W) bool, the pixels to colour.
        colour: RGB of the blend.
        alpha: how far the masked pixels move towards ``colour``.
    """
    out = photo.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    return out.round().astype(np.uint8)


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as temporary:
        Image.fromarray(array).save(temporary, format="PNG")


class VesselMapWriter:
    """Ignite handler that writes, for every image an evaluator has segmented, ``<name>_prob.png`` (probability,
    8 bits), ``<name>_mask.png`` (the postprocessing's binary ``pred``, 0/255), ``<name>_overlay.png`` and, with
    ``nifti``, ``<name>_prob.nii.gz`` (float32, Slicer's (W, H, 1) axis order), each atomically.

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
                self.save(item["name"], vessel_maps(output))

    def save(self, name: str, maps: VesselMaps) -> None:
        """Write the maps of the image whose output name is ``name``."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        paths = output_paths(self.output_dir, name, self.nifti)
        _save_png(np.round(maps.probability * 255).astype(np.uint8), paths["probability"])
        _save_png(maps.mask.astype(np.uint8) * 255, paths["mask"])
        _save_png(overlay(maps.photo, maps.mask), paths["overlay"])
        if self.nifti:
            import nibabel as nib

            with atomic_path(paths["nifti"]) as temporary:
                volume = maps.probability.T[:, :, None].astype(np.float32)
                nib.save(nib.Nifti1Image(volume, np.eye(4)), str(temporary))

    def summary(self, engine: Engine) -> None:
        if self.write:
            logger.info(f"wrote the outputs of {self.count} image(s) to {self.output_dir}")
        else:
            logger.warning(
                f"no trained weights: ran the UNTRAINED network on {self.count} image(s) to check the pipeline and "
                "wrote nothing (its output would look like a segmentation and mean nothing). Pass --ckpt_path with "
                "a trained model.pt, or --allow_untrained true to write the untrained outputs anyway."
            )
