"""The cohort tables, built from the stored per-image results (after a Ray run, or by ``--gather`` after shards):
the ``measure`` command's ``biomarkers.csv``, ``segments.csv``, ``quality.csv``, ``columns.json`` and
``cohort.png`` (:func:`iternet_monai.biomarkers.write_results`), ``biomarkers.parquet`` with the manifest's own
columns (``eye``, ...) and ``failures.csv`` with one reason per failed id."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Sequence
from pathlib import Path

from iternet_monai.cohort.manifest import CohortItem
from iternet_monai.cohort.store import CohortFolder
from iternet_monai.utils.files import atomic_path, atomic_write_text

__all__ = ["CohortCounts", "gather"]


@dataclasses.dataclass
class CohortCounts:
    """How the cohort's images ended: measured (by quality verdict), failed, or not yet run; the tables written."""

    measured: int = 0
    failed: int = 0
    missing: int = 0
    written: list = dataclasses.field(default_factory=list)
    verdicts: dict = dataclasses.field(default_factory=lambda: {"good": 0, "check": 0, "reject": 0})


def _failures_csv(rows: Sequence[tuple[str, str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "path", "reason"])
    writer.writerows(rows)
    return buffer.getvalue()


def _write_parquet(path: Path, rows: list[dict]) -> bool:
    """``rows`` as a Parquet table (pyarrow comes with the ``cohort`` extra); False where pyarrow is missing."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    columns = list(dict.fromkeys(name for row in rows for name in row))
    table = pa.table(
        {
            name: [None if isinstance(v, float) and math.isnan(v) else v for v in (row.get(name) for row in rows)]
            for name in columns
        }
    )
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
    return True


def gather(items: Sequence[CohortItem], folder: CohortFolder, mm_per_pixel: float | None, rules=None) -> CohortCounts:
    """Write the cohort tables of ``items`` from their stored results, each atomically; an image with neither a
    result nor a failure (a shard not run yet) is counted as missing and listed in ``failures.csv``.

    Args:
        items: the cohort, in the manifest's order.
        folder: the cohort folder.
        mm_per_pixel: the pixel size of the run (the tables' mm columns).
        rules: the quality rules (for ``columns.json``).
    """
    from iternet_monai.biomarkers import write_results

    counts, results, rows, failures = CohortCounts(), [], [], []
    for item in items:
        result = folder.image_result(item.id)
        if result is not None:
            counts.measured += 1
            counts.verdicts[result.quality["quality"]] += 1
            results.append(result)
            rows.append({"image": item.id, "path": item.path, "mm_per_pixel": item.mm_per_pixel, **dict(item.extra)})
            rows[-1].update(result.image)
            continue
        reason = folder.failure(item.id)
        counts.failed += reason is not None
        counts.missing += reason is None
        failures.append((item.id, item.path, reason or "not run yet (a shard that has not run, or a killed run)"))
    if results:
        write_results(results, folder.root, mm_per_pixel, rules)
        counts.written += ["biomarkers.csv", "segments.csv", "quality.csv", "columns.json", "cohort.png"]
        if _write_parquet(folder.root / "biomarkers.parquet", rows):
            counts.written.insert(1, "biomarkers.parquet")
    atomic_write_text(folder.root / "failures.csv", _failures_csv(failures))
    counts.written.append("failures.csv")
    return counts
