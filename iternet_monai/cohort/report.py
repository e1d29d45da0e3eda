"""``report.html`` of a cohort folder: one self-contained page, readable offline (no scripts, no external files
but the cohort's own): the counts, each biomarker's distribution (quantiles and an inline SVG histogram), the
quality reasons and their counts, the failures, and thumbnails of the flagged images (the overlay, linked to the
photograph and the maps)."""

from __future__ import annotations

import base64
import collections
import html
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from iternet_monai.biomarkers.figures import COHORT_COLUMNS
from iternet_monai.cohort.manifest import CohortItem
from iternet_monai.cohort.store import CohortFolder
from iternet_monai.cohort.tables import CohortCounts
from iternet_monai.utils.files import OUTPUT_SUFFIXES, atomic_write_text

__all__ = ["write_report"]

# At most this many flagged images get a thumbnail (the rest are in quality.csv).
MAX_THUMBNAILS = 200
STYLE = "body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}figure{display:inline-block}"


def _histogram(values: np.ndarray, width: int = 240, height: int = 60, bins: int = 30) -> str:
    """An inline SVG histogram of ``values``."""
    counts, _ = np.histogram(values, bins=bins)
    top, bar = max(int(counts.max()), 1), width / bins
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - height * c / top:.1f}" width="{bar - 1:.1f}" '
        f'height="{height * c / top:.1f}" fill="#4a7"/>'
        for i, c in enumerate(counts)
    )
    return f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">{rects}</svg>'


def _distributions(results: Sequence) -> str:
    rows = ["<tr><th>biomarker</th><th>n</th><th>5 %</th><th>median</th><th>95 %</th><th>histogram</th></tr>"]
    for column in COHORT_COLUMNS:
        values = np.array([r.image.get(column, np.nan) for r in results], np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            continue
        low, mid, high = np.quantile(values, [0.05, 0.5, 0.95])
        rows.append(
            f"<tr><th>{html.escape(column)}</th><td>{len(values)}</td><td>{low:.4g}</td><td>{mid:.4g}</td>"
            f"<td>{high:.4g}</td><td>{_histogram(values)}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def _thumbnail(path: Path, size: int = 160) -> str:
    """The image at ``path`` as a small inline JPEG (the page stays one file)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _flagged(folder: CohortFolder, flagged: Sequence) -> str:
    figures = []
    for result, item in flagged[:MAX_THUMBNAILS]:
        overlay = folder.root / "images" / f"{item.id}{OUTPUT_SUFFIXES['overlay']}"
        link = html.escape(Path(item.path).resolve().as_uri())
        reasons = html.escape(result.quality.get("reasons", "") or "")
        figures.append(
            f'<figure><a href="images/{html.escape(overlay.name)}"><img src="{_thumbnail(overlay)}" '
            f'alt="{html.escape(item.id)}"></a><figcaption><a href="{link}">{html.escape(item.id)}</a>: '
            f"{html.escape(result.quality['quality'])}<br><small>{reasons}</small></figcaption></figure>"
        )
    more = f"<p>{len(flagged) - MAX_THUMBNAILS} more in quality.csv</p>" if len(flagged) > MAX_THUMBNAILS else ""
    return "".join(figures) + more


def write_report(items: Sequence[CohortItem], folder: CohortFolder, counts: CohortCounts) -> None:
    """Write ``report.html`` in the cohort folder from its stored results.

    Args:
        items: the cohort.
        folder: the cohort folder.
        counts: what :func:`~.tables.gather` counted.
    """
    results, flagged, failures, reasons = [], [], [], collections.Counter()
    for item in items:
        result = folder.image_result(item.id)
        if result is None:
            failures.append((item.id, folder.failure(item.id) or "not run yet"))
            continue
        results.append(result)
        if result.quality["quality"] != "good":
            flagged.append((result, item))
            reasons.update(r for r in (result.quality.get("reasons") or "").split("; ") if r)
    verdicts = ", ".join(f"{n} {v}" for v, n in counts.verdicts.items())
    reason_rows = "".join(f"<tr><td>{n}</td><th>{html.escape(r)}</th></tr>" for r, n in reasons.most_common())
    failure_rows = "".join(f"<tr><th>{html.escape(i)}</th><td>{html.escape(r)}</td></tr>" for i, r in failures)
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Cohort report</title><style>{STYLE}</style>"
        f"</head><body><h1>Cohort report</h1><p>{len(items)} images: {counts.measured} measured ({verdicts}), "
        f"{counts.failed} failed, {counts.missing} not run yet.</p><h2>Biomarkers</h2>{_distributions(results)}"
        f"<h2>Quality reasons</h2><table>{reason_rows}</table><h2>Failures</h2><table>{failure_rows}</table>"
        f"<h2>Flagged images</h2>{_flagged(folder, flagged)}</body></html>\n"
    )
    atomic_write_text(folder.root / "report.html", page)
