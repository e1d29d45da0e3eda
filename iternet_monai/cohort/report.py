"""``report.html`` of a cohort folder: one self-contained page, readable offline (no scripts, no external files
but the cohort's own): the counts, each biomarker's distribution (quantiles and an inline SVG histogram), the
quality reasons counted by the limit crossed (with one example sentence each), the failures, and each flagged image's
photograph and overlay side by side as thumbnails (linked to the photograph and to the overlay). It is built from
what :func:`~.tables.gather` collected while it read the results, so its size does not grow with the cohort's: at
most :data:`~.tables.MAX_LISTED` failures and flagged images are listed, the rest counted."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from iternet_monai.cohort.manifest import CohortItem
from iternet_monai.cohort.store import CohortFolder
from iternet_monai.cohort.tables import CohortCounts
from iternet_monai.utils.files import OUTPUT_SUFFIXES, atomic_write_text

__all__ = ["write_report"]

STYLE = (
    "body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}figure{display:inline-block}"
    "figure img{margin-right:4px;vertical-align:top}"
)


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


def _distributions(counts: CohortCounts) -> str:
    rows = ["<tr><th>biomarker</th><th>n</th><th>5 %</th><th>median</th><th>95 %</th><th>histogram</th></tr>"]
    for column, column_values in counts.values.items():
        values = np.asarray(column_values, np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            continue
        low, mid, high = np.quantile(values, [0.05, 0.5, 0.95])
        rows.append(
            f"<tr><th>{html.escape(column)}</th><td>{len(values)}</td><td>{low:.4g}</td><td>{mid:.4g}</td>"
            f"<td>{high:.4g}</td><td>{_histogram(values)}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def _thumbnail(path: str | Path, size: int = 160) -> str | None:
    """The image at ``path`` as a small inline JPEG (the page stays one file), or None where it cannot be read."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # a JPEG decodes at 1/2 to 1/8 scale: fast for a large photograph
            image = image.convert("RGB")
            image.thumbnail((size, size))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _linked_thumbnail(path: str | Path, link: str, alt: str) -> str:
    """The thumbnail of ``path`` linked to ``link``; nothing where it cannot be read."""
    source = _thumbnail(path)
    return f'<a href="{html.escape(link)}"><img src="{source}" alt="{html.escape(alt)}"></a>' if source else ""


def _flagged(folder: CohortFolder, counts: CohortCounts) -> str:
    """Each flagged image listed: its photograph and overlay side by side, its verdict and reasons."""
    figures = []
    for item, verdict, reasons in counts.flagged:
        overlay = f"{item.id}{OUTPUT_SUFFIXES['overlay']}"
        photograph = Path(item.path).resolve().as_uri()
        figures.append(
            f"<figure>{_linked_thumbnail(item.path, photograph, f'{item.id} photograph')}"
            f"{_linked_thumbnail(folder.root / 'images' / overlay, f'images/{overlay}', f'{item.id} overlay')}"
            f'<figcaption><a href="{html.escape(photograph)}">{html.escape(item.id)}</a>: {html.escape(verdict)}'
            f"<br><small>{html.escape(reasons)}</small></figcaption></figure>"
        )
    flagged = counts.verdicts["check"] + counts.verdicts["reject"]
    return "".join(figures) + (f"<p>{flagged - len(figures)} more in quality.csv</p>" if flagged > len(figures) else "")


def write_report(items: Sequence[CohortItem], folder: CohortFolder, counts: CohortCounts) -> None:
    """Write ``report.html`` in the cohort folder from what :func:`~.tables.gather` collected while it read the
    results (no result is read again; only the flagged images' photographs and overlays, for their thumbnails).

    Args:
        items: the cohort.
        folder: the cohort folder.
        counts: what :func:`~.tables.gather` counted.
    """
    verdicts = ", ".join(f"{n} {v}" for v, n in counts.verdicts.items())
    header = "<tr><th>images</th><th>limit crossed</th><th>for example</th></tr>" if counts.reasons else ""
    reason_rows = header + "".join(
        f"<tr><td>{n}</td><th>{html.escape(kind)}</th><td>{html.escape(counts.reason_examples[kind])}</td></tr>"
        for kind, n in counts.reasons.most_common()
    )
    failure_rows = "".join(f"<tr><th>{html.escape(i)}</th><td>{html.escape(r)}</td></tr>" for i, r in counts.failures)
    unlisted = counts.failed + counts.missing - len(counts.failures)
    more = f"<p>{unlisted} more in failures.csv</p>" if unlisted > 0 else ""
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Cohort report</title><style>{STYLE}</style>"
        f"</head><body><h1>Cohort report</h1><p>{len(items)} images: {counts.measured} measured ({verdicts}), "
        f"{counts.failed} failed, {counts.missing} not run yet.</p><h2>Biomarkers</h2>{_distributions(counts)}"
        f"<h2>Quality reasons</h2><table>{reason_rows}</table><h2>Failures</h2><table>{failure_rows}</table>{more}"
        f"<h2>Flagged images</h2>{_flagged(folder, counts)}</body></html>\n"
    )
    atomic_write_text(folder.root / "report.html", page)
