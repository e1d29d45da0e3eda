"""The cohort's images: a manifest CSV (``id,path``, optional ``mm_per_pixel``, ``eye`` and any other columns, kept
as they are) or every photograph of a folder, each with a unique id that names its outputs."""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from pathlib import Path

from iternet_monai.utils.errors import InputError, optional
from iternet_monai.utils.files import PHOTO_SUFFIXES, file_suffix, unique_names

__all__ = ["CohortItem", "read_manifest", "cohort_items", "shard_of"]

# An id names files: letters, digits and . _ - only, not starting with a dot.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclasses.dataclass(frozen=True)
class CohortItem:
    """One photograph of the cohort.

    Args:
        id: the unique name of its outputs and its rows.
        path: the photograph.
        mm_per_pixel: its pixel size, or None (lengths in pixels only).
        extra: the manifest's other columns (``eye``, ...), copied to the tables.
    """

    id: str
    path: str
    mm_per_pixel: float | None = None
    extra: tuple[tuple[str, str], ...] = ()


def _pixel_size(value: str, where: str) -> float | None:
    if optional(value) is None:
        return None
    try:
        size = float(value)
    except ValueError:
        raise InputError(f"{where}: mm_per_pixel {value!r} is not a number") from None
    if not (size > 0 and math.isfinite(size)):
        raise InputError(f"{where}: mm_per_pixel must be positive, got {value}")
    return size


def read_manifest(path: str | Path, mm_per_pixel: float | None = None) -> list[CohortItem]:
    """The items of a manifest CSV with columns ``id`` and ``path`` (relative paths start from the manifest's
    folder); ``mm_per_pixel`` is the default of rows without their own.

    Args:
        path: the manifest.
        mm_per_pixel: the pixel size of rows that give none.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
            columns = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path}: cannot read the manifest ({err})") from None
    missing = [c for c in ("id", "path") if c not in columns]
    if not rows or missing:
        raise InputError(f"{path}: a manifest needs a header with the columns id and path and one row per image")
    items, seen = [], set()
    for line, row in enumerate(rows, start=2):
        where = f"{path} line {line}"
        image_id, image = (row.get("id") or "").strip(), (row.get("path") or "").strip()
        if not ID_PATTERN.fullmatch(image_id):
            raise InputError(f"{where}: id {image_id!r} must be letters, digits, '.', '_' or '-'")
        if image_id in seen:
            raise InputError(f"{where}: id {image_id} is given twice")
        seen.add(image_id)
        size = _pixel_size(row.get("mm_per_pixel") or "", where)
        extra = tuple((k, v or "") for k, v in row.items() if k not in ("id", "path", "mm_per_pixel") and k)
        image_path = image if Path(image).is_absolute() else str(path.parent / image)
        items.append(CohortItem(image_id, image_path, size if size is not None else mm_per_pixel, extra))
    return items


def cohort_items(source: str | Path, mm_per_pixel: float | None = None) -> list[CohortItem]:
    """The items of ``source``: a manifest CSV, or a folder whose photographs (any of
    :data:`~iternet_monai.utils.files.PHOTO_SUFFIXES`) are named by :func:`~iternet_monai.utils.files.unique_names`.

    Args:
        source: a manifest CSV or a folder of photographs.
        mm_per_pixel: the pixel size of images that give none.
    """
    source = Path(source)
    if source.is_file():
        return read_manifest(source, mm_per_pixel)
    if not source.is_dir():
        raise InputError(f"{source}: no such manifest or folder")
    photos = sorted(p for p in source.iterdir() if file_suffix(p) in PHOTO_SUFFIXES and not p.name.startswith("."))
    if not photos:
        raise InputError(f"{source}: no photographs ({', '.join(PHOTO_SUFFIXES)}) in the folder")
    return [CohortItem(n, str(p), mm_per_pixel) for n, p in zip(unique_names(photos), photos)]


def shard_of(items: list[CohortItem], shard: str) -> list[CohortItem]:
    """The items of ``shard`` ``"i/N"`` (``i`` from 0, as SLURM's ``$SLURM_ARRAY_TASK_ID``): every N-th item from
    the i-th, so that the N shards together hold every item once.

    Args:
        items: the cohort.
        shard: ``"i/N"``.
    """
    index, _, count = shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise InputError(f"--shard {shard}: expected i/N with 0 <= i < N, e.g. 0/100 for the first of 100 shards")
    return items[int(index) :: int(count)]
