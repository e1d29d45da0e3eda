"""The tables of ``iternet-monai measure``: ``biomarkers.csv``, ``segments.csv``, ``quality.csv`` and the column
dictionary ``columns.json``, each written atomically, and the check that refuses to overwrite them."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from iternet_monai import __version__
from iternet_monai.biomarkers.figures import figure_path, save_cohort_figure
from iternet_monai.biomarkers.measures import CENTRELINE_SIGMA, IMAGE_COLUMNS, SEGMENT_COLUMNS, mm_column
from iternet_monai.biomarkers.quality import DEFAULT_RULES, QUALITY_COLUMNS, QualityRule
from iternet_monai.utils.errors import InputError
from iternet_monai.utils.files import atomic_write_json, atomic_write_text, check_writable_folder

__all__ = ["TABLES", "ImageResult", "check_outputs", "write_results"]

TABLES = ("biomarkers.csv", "segments.csv", "quality.csv", "columns.json", "cohort.png")


@dataclasses.dataclass
class ImageResult:
    """One image's rows: ``image`` (biomarkers), ``segments`` and ``quality``, each keyed by column name."""

    stem: str
    image: dict
    segments: list[dict]
    quality: dict


def check_outputs(output_dir: str | Path, stems: Sequence[str], overwrite: bool = False) -> None:
    """Refuse (InputError naming the first file) when ``output_dir`` already holds an output of this command for
    these images, unless ``overwrite``, or when it cannot be written (a file, no permission); creates the folders."""
    output_dir = check_writable_folder(output_dir, "--output")
    existing = [output_dir / name for name in TABLES] + [figure_path(output_dir, stem) for stem in stems]
    existing = [path for path in existing if path.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} exists; choose another output folder or pass --overwrite")
    (output_dir / "figures").mkdir(parents=True, exist_ok=True)


def _columns(definitions: Mapping, mm_per_pixel: float | None) -> dict[str, dict]:
    out = {}
    for name, (unit, mm_unit, definition) in definitions.items():
        out[name] = {"unit": unit, "definition": definition}
        if mm_per_pixel is not None and mm_unit is not None:
            out[mm_column(name)] = {"unit": mm_unit, "definition": f"{name} in {mm_unit}"}
    return out


def _csv(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    """CSV text; floats with 6 significant digits, NaN (not measurable) as an empty field."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        values = [row.get(name, "") for name in columns]
        writer.writerow(
            [
                "" if isinstance(v, float) and math.isnan(v) else f"{v:.6g}" if isinstance(v, float) else v
                for v in values
            ]
        )
    return buffer.getvalue()


def write_results(
    results: Sequence[ImageResult],
    output_dir: str | Path,
    mm_per_pixel: float | None = None,
    rules: Mapping[str, QualityRule] | None = None,
) -> None:
    """Write ``biomarkers.csv`` (one row per image), ``segments.csv`` (one per segment), ``quality.csv``, the column
    dictionary ``columns.json`` and ``cohort.png`` to ``output_dir``, each atomically."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    image_columns = _columns(IMAGE_COLUMNS, mm_per_pixel)
    segment_columns = _columns(SEGMENT_COLUMNS, mm_per_pixel)
    quality_columns = {name: {"unit": unit, "definition": text} for name, (unit, text, _, _) in QUALITY_COLUMNS.items()}
    key = {"image": {"unit": "text", "definition": "file stem of the vessel map (without _mask / _prob)"}}
    tables = {
        "biomarkers.csv": ([{"image": r.stem, **r.image} for r in results], {**key, **image_columns}),
        "segments.csv": ([{"image": r.stem, **s} for r in results for s in r.segments], {**key, **segment_columns}),
        "quality.csv": ([{"image": r.stem, **r.quality} for r in results], {**key, **quality_columns}),
    }
    for name, (rows, columns) in tables.items():
        atomic_write_text(output_dir / name, _csv(rows, list(columns)))
    rules = {**DEFAULT_RULES, **(rules or {})}
    dictionary = {
        "software": f"iternet-monai {__version__}",
        "mm_per_pixel": mm_per_pixel,
        "centreline_smoothing_sigma_px": CENTRELINE_SIGMA,
        "empty_field": "not measurable for that image (no segments, no photograph, ...)",
        "quality_rules": {name: dataclasses.asdict(rule) for name, rule in rules.items()},
        "files": {name: columns for name, (_, columns) in tables.items()},
        "figures": {
            "figures/<image>.png": "the centreline coloured by segment calibre (px) and by tortuosity, over the "
            "photograph (or the vessel map when none was given)",
            "cohort.png": "each biomarker's values over the images; check and reject images in orange and red, named",
        },
    }
    atomic_write_json(output_dir / "columns.json", dictionary)
    save_cohort_figure(output_dir / "cohort.png", results)
