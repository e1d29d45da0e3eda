"""The cohort folder: each image's files, written atomically, and what a rerun reads back.

``images/<id>_prob.png``, ``_mask.png`` and ``_overlay.png`` are written as the bundle's inference writes them, then
``results/<id>.json`` (its key, biomarkers, segments and quality) last: a result file exists only once everything
of its image is on disk, so a killed run loses at most the images in flight. ``failures/<id>.json`` holds the one
reason an image failed; a later success removes it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from iternet_monai.cohort.manifest import CohortItem
from iternet_monai.data.maps import VesselMaps, save_vessel_maps
from iternet_monai.utils.files import atomic_write_json, remove_leftovers

__all__ = ["CohortFolder"]

FOLDERS = ("images", "results", "failures")


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers, for JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _nan(value: Any) -> Any:
    """JSON's ``null`` (a value that could not be measured) back as NaN, as the measure tables hold it."""
    return math.nan if value is None else value


class CohortFolder:
    """The files of one cohort run.

    Args:
        root: the cohort folder (created with its subfolders).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        for name in FOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def remove_leftovers(self) -> list[Path]:
        """Remove the temporary files of writes that a killed run left."""
        return [p for name in FOLDERS for p in remove_leftovers(self.root / name)]

    def result_path(self, image_id: str) -> Path:
        return self.root / "results" / f"{image_id}.json"

    def failure_path(self, image_id: str) -> Path:
        return self.root / "failures" / f"{image_id}.json"

    def read_result(self, image_id: str) -> dict | None:
        """The result of ``image_id``, or None when there is none (or an unreadable one, which is recomputed)."""
        try:
            return json.loads(self.result_path(image_id).read_text())
        except (OSError, ValueError):
            return None

    def done_key(self, image_id: str) -> str | None:
        """The key of the stored result of ``image_id``, or None."""
        result = self.read_result(image_id)
        return result.get("key") if isinstance(result, dict) else None

    def save_done(self, item: CohortItem, key: str, maps: tuple, result) -> None:
        """Write an image's maps, then its result (``result``: an :class:`~iternet_monai.biomarkers.ImageResult`)."""
        save_vessel_maps(self.root / "images", item.id, VesselMaps(*maps))
        record = {"id": item.id, "path": item.path, "key": key, "mm_per_pixel": item.mm_per_pixel}
        record.update(extra=dict(item.extra), image=result.image, segments=result.segments, quality=result.quality)
        atomic_write_json(self.result_path(item.id), _plain(record))
        self.failure_path(item.id).unlink(missing_ok=True)

    def save_failure(self, item: CohortItem, reason: str) -> None:
        """Write why an image failed; a result of an earlier run under other inputs no longer holds."""
        atomic_write_json(self.failure_path(item.id), {"id": item.id, "path": item.path, "reason": reason})
        self.result_path(item.id).unlink(missing_ok=True)

    def image_result(self, image_id: str):
        """The stored result of ``image_id`` as an :class:`~iternet_monai.biomarkers.ImageResult` (NaN where
        nothing could be measured), or None."""
        from iternet_monai.biomarkers import ImageResult

        record = self.read_result(image_id)
        if record is None:
            return None
        image = {k: _nan(v) for k, v in record["image"].items()}
        segments = [{k: _nan(v) for k, v in s.items()} for s in record["segments"]]
        quality = {k: _nan(v) for k, v in record["quality"].items()}
        return ImageResult(image_id, image, segments, quality)

    def failure(self, image_id: str) -> str | None:
        """The reason ``image_id`` failed, or None."""
        try:
            return json.loads(self.failure_path(image_id).read_text())["reason"]
        except (OSError, ValueError, KeyError):
            return None
