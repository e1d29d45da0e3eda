"""The cohort tables, built from the stored per-image results (after a Ray run, or by ``--gather`` after shards):
the ``measure`` command's ``biomarkers.csv``, ``segments.csv``, ``quality.csv``, ``columns.json`` and
``cohort.png`` (:func:`iternet_monai.biomarkers.write_results`), ``biomarkers.parquet`` with the manifest's own
columns (``eye``, ...) and ``failures.csv`` with one reason per failed id.

Every table is written row by row while the results are read, one at a time, so the memory a cohort needs does not
grow with its segments: what is kept per image is its biomarkers and verdict for ``cohort.png`` and the histograms
of ``report.html`` (:class:`CohortCounts`)."""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import itertools
import math
from array import array
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from iternet_monai.biomarkers.figures import COHORT_COLUMNS
from iternet_monai.biomarkers.measures import IMAGE_COLUMNS, mm_column
from iternet_monai.biomarkers.quality import QUALITY_COLUMNS
from iternet_monai.cohort.manifest import CohortItem
from iternet_monai.cohort.store import CohortFolder
from iternet_monai.utils.files import atomic_path

__all__ = ["MAX_LISTED", "CohortCounts", "gather"]

# report.html lists at most this many flagged images (with thumbnails) and failures; all are in the CSV tables.
MAX_LISTED = 200
# Rows per Parquet row group.
PARQUET_BATCH = 1024
NOT_RUN = "not run yet (a shard that has not run, or a killed run)"
# The start of each quality reason sentence (before its numbers) -> what it is about, e.g. "exposure, low".
REASON_KINDS = {
    template.split("{")[0]: f"{name}, {side}"
    for name, (_, _, below, above) in QUALITY_COLUMNS.items()
    for template, side in ((below, "low"), (above, "high"))
    if template
}


def _reason_kind(reason: str) -> str:
    """Which limit a quality reason sentence reports (``exposure, low``); the sentence itself if none matches."""
    return next((kind for start, kind in REASON_KINDS.items() if reason.startswith(start)), reason)


@dataclasses.dataclass
class CohortCounts:
    """How the cohort's images ended: measured (by quality verdict), failed, or not yet run; the tables written;
    and what ``report.html`` shows: each :data:`COHORT_COLUMNS` biomarker's values, the quality reasons by kind
    (with one example sentence each), and the first :data:`MAX_LISTED` flagged images and failures."""

    measured: int = 0
    failed: int = 0
    missing: int = 0
    written: list = dataclasses.field(default_factory=list)
    verdicts: dict = dataclasses.field(default_factory=lambda: {"good": 0, "check": 0, "reject": 0})
    values: dict = dataclasses.field(default_factory=lambda: {name: array("d") for name in COHORT_COLUMNS})
    reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    reason_examples: dict = dataclasses.field(default_factory=dict)
    flagged: list = dataclasses.field(default_factory=list)
    failures: list = dataclasses.field(default_factory=list)

    def add_result(self, item: CohortItem, result) -> None:
        """Count a measured image (``result``: its :class:`~iternet_monai.biomarkers.ImageResult`)."""
        verdict, reasons = result.quality["quality"], result.quality.get("reasons") or ""
        self.measured += 1
        self.verdicts[verdict] += 1
        for name, values in self.values.items():
            values.append(result.image.get(name, math.nan))
        for reason in filter(None, reasons.split("; ")):
            kind = _reason_kind(reason)
            self.reasons[kind] += 1
            self.reason_examples.setdefault(kind, reason)
        if verdict != "good" and len(self.flagged) < MAX_LISTED:
            self.flagged.append((item, verdict, reasons))

    def add_failure(self, item: CohortItem, reason: str | None) -> None:
        """Count an image that failed (``reason``) or has not run yet (None)."""
        self.failed += reason is not None
        self.missing += reason is None
        if len(self.failures) < MAX_LISTED:
            self.failures.append((item.id, reason or "not run yet"))


def _parquet_columns(items: Sequence[CohortItem]) -> dict[str, str]:
    """The columns of ``biomarkers.parquet``, each with the type it gets when the first batch has no value in it:
    the manifest's (``image`` for the id; ``mm_per_pixel`` null where no image has one), then the biomarkers, their mm
    columns last where an image has a pixel size (as :func:`~iternet_monai.biomarkers.measure_image` adds them)."""
    millimetres = any(item.mm_per_pixel is not None for item in items)
    mm = [mm_column(name) for name, (_, unit, _) in IMAGE_COLUMNS.items() if unit is not None and millimetres]
    columns = {"image": "string", "path": "string", "mm_per_pixel": "float64" if millimetres else "null"}
    columns.update(dict.fromkeys((name for item in items for name, _ in item.extra), "string"))
    return {**columns, **dict.fromkeys([*IMAGE_COLUMNS, *mm], "float64")}


class _ParquetRows(contextlib.AbstractContextManager):
    """Rows written to ``path`` as Parquet in row groups of :data:`PARQUET_BATCH` (pyarrow's ``ParquetWriter``), into
    a temporary file renamed on a clean exit; nothing is written when no row came. A column's type is the one pyarrow
    infers from the first batch (NaN is null), or its fallback where that batch has no value in it.

    Args:
        path: the Parquet file.
        columns: the columns in order, each with its fallback type (a pyarrow type's name: ``string``, ``float64``).
    """

    def __init__(self, path: Path, columns: Mapping[str, str]) -> None:
        import pyarrow
        import pyarrow.parquet

        self.pa, self.path, self.columns = pyarrow, path, dict(columns)
        self.rows: list[dict] = []
        self.stack = contextlib.ExitStack()
        self.writer = None

    def append(self, row: Mapping[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= PARQUET_BATCH:
            self.flush()

    def flush(self) -> None:
        """Write the rows held as one row group."""
        if not self.rows:
            return
        values = {
            name: [None if isinstance(v, float) and math.isnan(v) else v for v in (row.get(name) for row in self.rows)]
            for name in self.columns
        }
        if self.writer is None:
            types = {name: self.pa.array(column).type for name, column in values.items()}
            schema = self.pa.schema(
                [(n, getattr(self.pa, self.columns[n])() if self.pa.types.is_null(t) else t) for n, t in types.items()]
            )
            temporary = self.stack.enter_context(atomic_path(self.path))
            self.writer = self.stack.enter_context(self.pa.parquet.ParquetWriter(temporary, schema))
        self.writer.write_table(self.pa.table(values, schema=self.writer.schema))
        self.rows = []

    def __exit__(self, kind, value, traceback) -> bool | None:
        if kind is None:
            try:
                self.flush()
            except BaseException as err:
                self.stack.__exit__(type(err), err, err.__traceback__)
                raise
        return self.stack.__exit__(kind, value, traceback)


def _parquet_rows(path: Path, items: Sequence[CohortItem]) -> contextlib.AbstractContextManager:
    """A :class:`_ParquetRows` for ``path``, or a null context (None) where pyarrow (the ``cohort`` extra) is
    missing."""
    try:
        return _ParquetRows(path, _parquet_columns(items))
    except ImportError:
        return contextlib.nullcontext()


def _results(items: Sequence[CohortItem], folder: CohortFolder, counts: CohortCounts, failures, parquet) -> Iterator:
    """Each stored result of ``items`` in order, one at a time, while counting them, adding their Parquet rows and
    writing the failures' rows."""
    for item in items:
        result = folder.image_result(item.id)
        if result is None:
            reason = folder.failure(item.id)
            counts.add_failure(item, reason)
            failures.writerow([item.id, item.path, reason or NOT_RUN])
            continue
        counts.add_result(item, result)
        if parquet is not None:
            row = {"image": item.id, "path": item.path, "mm_per_pixel": item.mm_per_pixel, **dict(item.extra)}
            parquet.append({**row, **result.image})
        yield result


def gather(items: Sequence[CohortItem], folder: CohortFolder, mm_per_pixel: float | None, rules=None) -> CohortCounts:
    """Write the cohort tables of ``items`` from their stored results, each atomically; an image with neither a
    result nor a failure (a shard not run yet) is counted as missing and listed in ``failures.csv``. The results are
    read one at a time and every table is written as they come (the module's docstring).

    Args:
        items: the cohort, in the manifest's order.
        folder: the cohort folder.
        mm_per_pixel: the pixel size of the run (the tables' mm columns).
        rules: the quality rules (for ``columns.json``).
    """
    from iternet_monai.biomarkers import write_results

    counts = CohortCounts()
    with (
        atomic_path(folder.root / "failures.csv") as failures_path,
        open(failures_path, "w") as handle,
        _parquet_rows(folder.root / "biomarkers.parquet", items) as parquet,
    ):
        failures = csv.writer(handle, lineterminator="\n")
        failures.writerow(["id", "path", "reason"])
        results = _results(items, folder, counts, failures, parquet)
        first = next(results, None)
        if first is not None:
            write_results(itertools.chain([first], results), folder.root, mm_per_pixel, rules)
            counts.written += ["biomarkers.csv", "segments.csv", "quality.csv", "columns.json", "cohort.png"]
            if parquet is not None:
                counts.written.insert(1, "biomarkers.parquet")
    counts.written.append("failures.csv")
    return counts
