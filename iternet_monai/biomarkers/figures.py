"""The pictures of ``iternet-monai measure``: per image, the centreline coloured by calibre and by tortuosity
(``figures/<stem>.png``); per cohort, every biomarker's values with the flagged images named (``cohort.png``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from iternet_monai.biomarkers.measures import IMAGE_COLUMNS, VesselMeasures, mm_column
from iternet_monai.utils.files import atomic_path

if TYPE_CHECKING:
    from iternet_monai.biomarkers.tables import ImageResult

__all__ = ["COHORT_COLUMNS", "figure_path", "save_vessel_figure", "save_cohort_figure"]

# Biomarkers shown in the cohort figure (bookkeeping columns such as the fit range are left out).
COHORT_COLUMNS = (
    "vessel_area_density",
    "length_density_per_px",
    "total_length_px",
    "fractal_dimension",
    "branch_points",
    "end_points",
    "segments",
    "components",
    "segment_length_median_px",
    "tortuosity_median",
    "tortuosity_weighted",
    "calibre_median_px",
    "calibre_weighted_px",
)
VERDICT_COLOURS = {"good": "tab:blue", "check": "tab:orange", "reject": "tab:red"}
# cohort.png names at most this many flagged images (a large cohort would be all labels).
MAX_NAMED = 20


def figure_path(output_dir: str | Path, stem: str) -> Path:
    """Where the per-image figure of ``stem`` goes: ``<output_dir>/figures/<stem>.png``."""
    return Path(output_dir) / "figures" / f"{stem}.png"


def _colour_bar(height: int, cmap, low: float, high: float, font) -> Image.Image:
    """A vertical colour bar ``height`` pixels tall with its top, middle and bottom values written beside it."""
    ramp = cmap(np.linspace(1.0, 0.0, height))[:, None, :3].repeat(14, axis=1)
    bar = Image.new("RGB", (70, height + 16), "white")
    bar.paste(Image.fromarray((ramp * 255).astype(np.uint8)), (0, 8))
    draw = ImageDraw.Draw(bar)
    for fraction in (0.0, 0.5, 1.0):
        draw.text(
            (18, 8 + round((1 - fraction) * (height - 1))), f"{low + fraction * (high - low):.3g}", "black", font, "lm"
        )
    return bar


def save_vessel_figure(path: str | Path, stem: str, measures: VesselMeasures, background: np.ndarray) -> None:
    """Two panels: the centreline coloured by segment calibre and by segment tortuosity, over ``background`` (a
    photograph (H, W, 3) or the vessel map (H, W)), dimmed so the colours read; each with its colour bar. Drawn
    with Pillow at the image's own size (matplotlib takes ten times longer per image)."""
    import matplotlib
    from scipy import ndimage

    base = np.asarray(background, np.float64)
    base = base / 255.0 if base.max() > 1 else base
    base = 0.25 + 0.45 * base if base.ndim == 3 else np.repeat(0.15 + 0.35 * base[..., None], 3, axis=2)
    thick = ndimage.grey_dilation(measures.centreline, size=(2, 2))  # two pixels wide, so the colours show
    height, width = thick.shape
    font = ImageFont.load_default(size=max(10, min(24, width // 40)))
    title = font.size + 12
    canvas = Image.new("RGB", (2 * (width + 80), height + title), "white")
    draw = ImageDraw.Draw(canvas)
    for panel, (column, label, cmap, limits) in enumerate(
        (
            ("calibre_px", "calibre (px)", "viridis", None),
            ("tortuosity", "tortuosity (arc / chord)", "plasma", (1.0, 1.3)),
        )
    ):
        values = np.array([np.nan] + [s[column] for s in measures.segments])
        finite = values[np.isfinite(values)]
        low, high = limits or ((0.0, float(np.percentile(finite, 98))) if finite.size else (0.0, 1.0))
        high = max(high, low + 1e-6)
        colours = matplotlib.colormaps[cmap](np.clip((np.nan_to_num(values, nan=low) - low) / (high - low), 0, 1))
        picture = np.where((thick > 0)[..., None], colours[thick][..., :3], base)
        left = panel * (width + 80)
        canvas.paste(Image.fromarray((picture * 255).round().astype(np.uint8)), (left, title))
        canvas.paste(
            _colour_bar(int(height * 0.6), matplotlib.colormaps[cmap], low, high, font), (left + width + 6, title)
        )
        draw.text((left + 4, 4), f"{stem}: {label}", "black", font)
    with atomic_path(path) as temporary:
        canvas.save(temporary, compress_level=1)  # 5x faster than the default 6, files 1.5x larger


def save_cohort_figure(path: str | Path, results: Sequence[ImageResult]) -> None:
    """One panel per biomarker: every image's value (jittered dots), flagged images coloured, the first
    :data:`MAX_NAMED` of them named (``quality.csv`` lists them all); in mm where any image has its pixel size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = COHORT_COLUMNS
    ncols = 4
    nrows = -(-len(columns) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), dpi=100, squeeze=False)
    jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(results))
    verdicts = [r.quality["quality"] for r in results]
    named = [i for i, verdict in enumerate(verdicts) if verdict != "good"][:MAX_NAMED]
    for ax, column in zip(axes.ravel(), columns):
        unit = IMAGE_COLUMNS[column][1] if any(mm_column(column) in r.image for r in results) else None
        column, unit = (mm_column(column), unit) if unit else (column, IMAGE_COLUMNS[column][0])
        values = np.array([r.image.get(column, np.nan) for r in results], np.float64)
        ax.boxplot(
            values[np.isfinite(values)], positions=[0], widths=0.7, showfliers=False, medianprops={"color": "grey"}
        )
        for verdict, colour in VERDICT_COLOURS.items():
            chosen = [i for i, v in enumerate(verdicts) if v == verdict]
            ax.scatter(jitter[chosen], values[chosen], s=14, color=colour, label=verdict, zorder=3)
        for i in named:
            if np.isfinite(values[i]):
                ax.annotate(
                    results[i].stem, (jitter[i], values[i]), fontsize=6, xytext=(4, 0), textcoords="offset points"
                )
        ax.set_title(f"{column} ({unit})", fontsize=8)
        ax.set_xticks([])
        ax.set_xlim(-0.6, 0.9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(columns) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    fig.legend(handles=handles, loc="lower right", fontsize=8, title="quality")
    fig.suptitle(f"{len(results)} images", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary)
    plt.close(fig)
