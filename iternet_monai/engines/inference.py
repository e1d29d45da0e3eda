"""Batch inference the model-zoo way: ``inference.json`` wires preprocessing -> inferer -> postprocessing -> writer
into MONAI's ``SupervisedEvaluator``. This module holds what MONAI has no stock part for: the inputs of a run (checked
files, a unique output name per input, outputs that exist, the folder's own outputs), the writer, and the parsed
pipeline that evaluation and the benchmarks share with the bundle.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from PIL import Image
from tqdm import tqdm

from iternet_monai.data import check_files, inference_items
from iternet_monai.engines.checkpoints import BUNDLE_DIR
from iternet_monai.utils.errors import InputError, flag, optional
from iternet_monai.utils.files import (
    OUTPUT_SUFFIXES,
    atomic_path,
    check_writable_folder,
    file_stem,
    remove_leftovers,
    unique_names,
)

__all__ = [
    "output_paths",
    "InferenceInputs",
    "VesselMapWriter",
    "ImageProgress",
    "overlay",
    "segment",
    "load_pipeline",
]

logger = logging.getLogger(__name__)


def output_paths(output_dir: str | Path, name: str, nifti: bool = False) -> dict[str, Path]:
    """The files written for the image whose output name is ``name``."""
    kinds = [k for k in OUTPUT_SUFFIXES if nifti or k != "nifti"]
    return {kind: Path(output_dir) / f"{name}{OUTPUT_SUFFIXES[kind]}" for kind in kinds}


class InferenceInputs:
    """What a run segments: the datalist's ``data_key`` list, every photograph in ``dataset_dir``, or, with neither,
    the embedded sample. Every file is checked first (one line per unreadable or unusable file, one below
    ``min_size`` pixels a side or one above ``max_pixels``; the others are still segmented); each item gets a unique
    output ``name``; photographs that are this command's own outputs (a folder segmented into itself) are left out.
    An item whose outputs all exist is skipped unless ``overwrite``; one with only some of them (a run that was
    killed or ran out of disk) is segmented again, and the temporary files such a run left are removed.
    :meth:`report` ends the run with a non-zero exit when an input was bad."""

    def __init__(
        self,
        dataset_dir: str | Path | None,
        output_dir: str | Path,
        datalist: str | Path | None = None,
        data_key: str = "testing",
        nifti: bool = False,
        overwrite: bool = False,
        max_pixels: int | None = None,
        min_size: int | None = None,
    ) -> None:
        nifti, overwrite = flag(nifti, "nifti"), flag(overwrite, "overwrite")
        check_writable_folder(output_dir, "--output_dir")
        for leftover in remove_leftovers(output_dir):
            logger.info(f"removed {leftover}, left by an interrupted write")
        candidates = inference_items(dataset_dir, datalist, data_key)
        self.total = len(candidates)
        candidates = self._without_own_outputs(candidates)
        good, self.problems = check_files(candidates, keys=("image",), min_size=min_size, max_pixels=max_pixels)
        for problem in self.problems:
            logger.warning(f"skipping {problem}")
        names = unique_names([item["image"] for item in good])
        self.items: list[dict] = []
        existing, incomplete = [], []
        for item, name in zip(good, names):
            written = [p.exists() for p in output_paths(output_dir, name, nifti).values()]
            if not overwrite and all(written):
                existing.append(item["image"])
                continue
            if not overwrite and any(written):
                incomplete.append(name)
            self.items.append({"image": item["image"], "name": name})
        if existing:
            logger.warning(
                f"skipped {len(existing)} image(s) whose outputs exist in {output_dir} "
                "(pass --overwrite true to replace them)"
            )
        if incomplete:
            logger.warning(
                f"segmenting {len(incomplete)} image(s) again whose outputs in {output_dir} are incomplete (an "
                f"interrupted run): {', '.join(incomplete)}"
            )

    @staticmethod
    def _without_own_outputs(items: list[dict]) -> list[dict]:
        stems = {(Path(item["image"]).parent, file_stem(item["image"])) for item in items}
        endings = [s for k, s in OUTPUT_SUFFIXES.items() if k != "nifti"]

        def is_output(path: Path) -> bool:
            return any(
                path.name.endswith(ending) and (path.parent, path.name[: -len(ending)]) in stems for ending in endings
            )

        kept = [item for item in items if not is_output(Path(item["image"]))]
        if len(kept) < len(items):
            logger.info(f"left out {len(items) - len(kept)} file(s) that are this command's own outputs")
        return kept

    def report(self) -> None:
        """Raise an InputError naming the bad inputs, one line each, if there were any."""
        if self.problems:
            lines = "\n  ".join(self.problems)
            raise InputError(f"{len(self.problems)} of {self.total} image(s) could not be segmented:\n  {lines}")


def overlay(
    photo: np.ndarray, mask: np.ndarray, colour: Sequence[int] = (0, 255, 64), alpha: float = 0.6
) -> np.ndarray:
    """The photograph (H, W, 3 uint8) with ``mask`` pixels blended towards ``colour``."""
    out = photo.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    return out.round().astype(np.uint8)


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as temporary:
        Image.fromarray(array).save(temporary, format="PNG")


class VesselMapWriter:
    """Ignite handler that writes, for every image an evaluator has segmented, ``<name>_prob.png`` (probability,
    8 bits), ``<name>_mask.png`` (the postprocessing's binary ``pred``, 0/255), ``<name>_overlay.png`` and, with
    ``nifti``, ``<name>_prob.nii.gz`` (float32, Slicer's (W, H, 1) axis order), each atomically. With ``measure``,
    the vessel biomarkers and quality of every mask too (:mod:`iternet_monai.biomarkers.measure`: ``biomarkers.csv``,
    ``segments.csv``, ``quality.csv``, ``columns.json``, ``cohort.png`` and ``figures/<name>.png``).

    Ours: MONAI's ``SaveImaged`` writes one array per transform, not atomically, and names files by its own rule.
    An untrained network (``weights`` None) writes nothing unless ``allow_untrained``: its output would look like a
    segmentation and mean nothing.
    """

    def __init__(
        self,
        output_dir: str | Path,
        nifti: bool = False,
        weights: str | None = None,
        allow_untrained: bool = False,
        measure: bool = False,
        mm_per_pixel: float | None = None,
        overwrite: bool = False,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.nifti, self.overwrite = flag(nifti, "nifti"), flag(overwrite, "overwrite")
        self.write = optional(weights) is not None or flag(allow_untrained, "allow_untrained")
        self.measure, self.mm_per_pixel = flag(measure, "measure"), mm_per_pixel
        self.measured: list = []
        self.count = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.summary)
        if self.write and self.measure:  # refuse before any work when an earlier run's tables are there
            from iternet_monai.biomarkers.measure import check_outputs

            names = [item["name"] for item in engine.data_loader.dataset.data]
            check_outputs(self.output_dir, names, self.overwrite)

    def __call__(self, engine: Engine) -> None:
        for item, output in zip(engine.state.batch, engine.state.output):
            self.count += 1
            if self.write:
                self.save(item["name"], output)

    def save(self, name: str, output: Mapping[str, Any]) -> None:
        """Write the outputs of one image: ``output`` holds ``prob`` (1, W, H), ``pred`` and ``image`` (3, W, H)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        paths = output_paths(self.output_dir, name, self.nifti)
        prob = torch.as_tensor(output["prob"]).float().squeeze(0).cpu().numpy()
        mask = torch.as_tensor(output["pred"]).reshape(prob.shape).cpu().numpy() > 0
        photo = torch.as_tensor(output["image"]).float().cpu().numpy()
        _save_png(np.round(prob.T * 255).astype(np.uint8), paths["probability"])
        _save_png(mask.T.astype(np.uint8) * 255, paths["mask"])
        _save_png(overlay(np.round(photo.transpose(2, 1, 0) * 255).astype(np.uint8), mask.T), paths["overlay"])
        if self.nifti:
            import nibabel as nib

            with atomic_path(paths["nifti"]) as temporary:
                nib.save(nib.Nifti1Image(prob[:, :, None].astype(np.float32), np.eye(4)), str(temporary))
        if self.measure:
            from iternet_monai.biomarkers.measure import figure_path, measure_image

            photo_hw = np.round(photo.transpose(2, 1, 0) * 255).astype(np.uint8)
            figure = figure_path(self.output_dir, name)
            result = measure_image(
                name, mask.T, photo=photo_hw, probability=prob.T, mm_per_pixel=self.mm_per_pixel, figure=figure
            )
            self.measured.append(result)

    def summary(self, engine: Engine) -> None:
        if self.write and self.measured:
            from iternet_monai.biomarkers.measure import write_results

            write_results(self.measured, self.output_dir, self.mm_per_pixel)
            logger.info(f"wrote the biomarkers and quality of {len(self.measured)} image(s) to {self.output_dir}")
        if self.write:
            logger.info(f"wrote the outputs of {self.count} image(s) to {self.output_dir}")
        else:
            logger.warning(
                f"no trained weights: ran the UNTRAINED network on {self.count} image(s) to check the pipeline and "
                "wrote nothing (its output would look like a segmentation and mean nothing). Pass --ckpt_path with "
                "a trained model.pt, or --allow_untrained true to write the untrained outputs anyway."
            )


class ImageProgress:
    """Ignite handler: a bar of the images segmented out of the run's total, drawn at 0 when the run starts,
    advanced as each image's outputs are written (attach it after the writer) and closed when the last one is.
    Ours: ignite's ``ProgressBar`` is first drawn when the first image is done, already at 1."""

    def __init__(self, desc: str = "segmenting") -> None:
        self.desc = desc
        self.bar: tqdm | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.open)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.advance)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.close)

    def open(self, engine: Engine) -> None:
        self.bar = tqdm(total=len(engine.data_loader.dataset), desc=self.desc, unit="image")

    def advance(self, engine: Engine) -> None:
        if self.bar is not None:
            self.bar.update(len(engine.state.batch))

    def close(self, engine: Engine) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def segment(evaluator: Engine, inputs: InferenceInputs) -> None:
    """Run the inference evaluator over ``inputs`` (if any are left), then report bad inputs. The evaluator logs
    warnings and errors only: ignite's notes on starting, finishing an epoch and finishing the run say nothing
    to a user of inference, whose progress bar and written-outputs line say what was done. (The level is restored
    after the run: the logger is shared by every evaluator of the process, a training's validation included.)"""
    if inputs.items:
        level = evaluator.logger.level
        evaluator.logger.setLevel(logging.WARNING)
        try:
            evaluator.run()
        finally:
            evaluator.logger.setLevel(level)
    else:
        logger.info("nothing to segment")
    inputs.report()


def load_pipeline(config_file: str | Path | None = None, **overrides: Any):
    """The bundle's ``inference.json`` parsed with ``overrides`` (``ckpt_path``, ``mode``, ``device``, ...): the one
    pipeline whose ``network``, ``inferer`` and ``postprocessing`` evaluation and the benchmarks use."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file or BUNDLE_DIR / "configs" / "inference.json"))
    parser.update(overrides)
    parser.parse()
    return parser
