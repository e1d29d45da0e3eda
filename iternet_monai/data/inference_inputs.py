"""The inputs of a batch inference run: checked files, a unique output name per input, outputs that already exist."""

from __future__ import annotations

import logging
from pathlib import Path

from iternet_monai.data.datalist import check_files, inference_items
from iternet_monai.utils.errors import InputError, flag
from iternet_monai.utils.files import OUTPUT_SUFFIXES, check_writable_folder, file_stem, remove_leftovers, unique_names

__all__ = ["output_paths", "InferenceInputs"]

logger = logging.getLogger(__name__)


def output_paths(output_dir: str | Path, name: str, nifti: bool = False) -> dict[str, Path]:
    """The files written for the image whose output name is ``name``.

    Args:
        output_dir: the run's output folder.
        name: the image's output name (:attr:`InferenceInputs.items`).
        nifti: include the ``<name>_prob.nii.gz`` map.
    """
    kinds = [k for k in OUTPUT_SUFFIXES if nifti or k != "nifti"]
    return {kind: Path(output_dir) / f"{name}{OUTPUT_SUFFIXES[kind]}" for kind in kinds}


class InferenceInputs:
    """What a run segments: the datalist's ``data_key`` list, every photograph in ``dataset_dir``, or, with neither,
    the embedded sample. Every file is checked first (one line per unreadable or unusable file, one below
    ``min_size`` pixels a side or one above ``max_pixels``; the others are still segmented); each item gets a unique
    output ``name``; photographs that are this command's own outputs (a folder segmented into itself) are left out.
    An item whose outputs all exist is skipped unless ``overwrite``; one with only some of them (a run that was
    killed or ran out of disk) is segmented again, and the temporary files such a run left are removed.
    :meth:`report` ends the run with a non-zero exit when an input was bad.

    Args:
        dataset_dir: the folder of photographs, or the root the datalist's paths are relative to.
        output_dir: where the outputs go (checked to be writable).
        datalist: a datalist file or the name of a built-in one.
        data_key: the datalist's list to segment.
        nifti: the run writes NIfTI maps too (an item without one is incomplete).
        overwrite: segment items whose outputs exist again.
        max_pixels: refuse photographs of more pixels.
        min_size: refuse photographs smaller a side.
    """

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
        self.items: list[dict] = []
        existing, incomplete = [], []
        for item, name in zip(good, unique_names([item["image"] for item in good])):
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
