"""The tables of ``iternet-monai measure``: ``biomarkers.csv``, ``segments.csv``, ``quality.csv`` and the column
dictionary ``columns.json``, each written atomically, and the check that refuses to overwrite them."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from iternet_monai import __version__
from iternet_monai.biomarkers.figures import COHORT_COLUMNS, figure_path, save_cohort_figure
from iternet_monai.biomarkers.measures import CENTRELINE_SIGMA, IMAGE_COLUMNS, SEGMENT_COLUMNS, mm_column
from iternet_monai.biomarkers.quality import DEFAULT_RULES, QUALITY_COLUMNS, QualityRule
from iternet_monai.utils.errors import InputError
from iternet_monai.utils.files import atomic_path, atomic_write_json, check_writable_folder

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


def _csv_row(row: Mapping, columns: Sequence[str]) -> list:
    """One CSV row; floats with 6 significant digits, NaN (not measurable) as an empty field."""
    values = [row.get(name, "") for name in columns]
    return ["" if isinstance(v, float) and math.isnan(v) else f"{v:.6g}" if isinstance(v, float) else v for v in values]


def _figure_result(result: ImageResult) -> ImageResult:
    """What ``cohort.png`` needs of ``result``: its biomarkers of :data:`COHORT_COLUMNS` (pixel and mm) and its
    verdict, not its segments (a few hundred rows per image), so a cohort's results need not all be held."""
    wanted = {*COHORT_COLUMNS, *map(mm_column, COHORT_COLUMNS)}
    image = {name: value for name, value in result.image.items() if name in wanted}
    return ImageResult(result.stem, image, [], {"quality": result.quality["quality"]})


def _table_columns(mm_per_pixel: float | None) -> dict[str, dict[str, dict]]:
    """Each table's columns, name -> {"unit", "definition"} (``columns.json``'s ``files``)."""
    quality_columns = {name: {"unit": unit, "definition": text} for name, (unit, text, _, _) in QUALITY_COLUMNS.items()}
    key = {"image": {"unit": "text", "definition": "file stem of the vessel map (without _mask / _prob)"}}
    return {
        "biomarkers.csv": {**key, **_columns(IMAGE_COLUMNS, mm_per_pixel)},
        "segments.csv": {**key, **_columns(SEGMENT_COLUMNS, mm_per_pixel)},
        "quality.csv": {**key, **quality_columns},
    }


def _write_tables(results: Iterable[ImageResult], output_dir: Path, tables: Mapping[str, dict]) -> list[ImageResult]:
    """Write the CSV tables row by row as ``results`` come, each into its temporary file (renamed when all are
    complete); returns what the cohort figure needs of each result (:func:`_figure_result`)."""
    figure_results = []
    with contextlib.ExitStack() as stack:
        writers = {}
        for name, columns in tables.items():
            handle = stack.enter_context(open(stack.enter_context(atomic_path(output_dir / name)), "w"))
            writers[name] = csv.writer(handle, lineterminator="\n")
            writers[name].writerow(list(columns))
        for result in results:
            key = {"image": result.stem}
            writers["biomarkers.csv"].writerow(_csv_row({**key, **result.image}, tables["biomarkers.csv"]))
            for segment in result.segments:
                writers["segments.csv"].writerow(_csv_row({**key, **segment}, tables["segments.csv"]))
            writers["quality.csv"].writerow(_csv_row({**key, **result.quality}, tables["quality.csv"]))
            figure_results.append(_figure_result(result))
    return figure_results


def write_results(
    results: Iterable[ImageResult],
    output_dir: str | Path,
    mm_per_pixel: float | None = None,
    rules: Mapping[str, QualityRule] | None = None,
) -> None:
    """Write ``biomarkers.csv`` (one row per image), ``segments.csv`` (one per segment), ``quality.csv``, the column
    dictionary ``columns.json`` and ``cohort.png`` to ``output_dir``, each atomically. The tables are written row by
    row as ``results`` come (a generator works), so only each image's biomarkers and verdict are held, for
    ``cohort.png``, never every image's segments.

    Args:
        results: each image's rows, in the tables' order.
        output_dir: the folder (created).
        mm_per_pixel: the pixel size, which adds the mm columns to ``columns.json``'s definitions.
        rules: the quality rules used (the defaults with these changed), for ``columns.json``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tables = _table_columns(mm_per_pixel)
    figure_results = _write_tables(results, output_dir, tables)
    rules = {**DEFAULT_RULES, **(rules or {})}
    dictionary = {
        "software": f"iternet-monai {__version__}",
        "mm_per_pixel": mm_per_pixel,
        "centreline_smoothing_sigma_px": CENTRELINE_SIGMA,
        "empty_field": "not measurable for that image (no segments, no photograph, ...)",
        "quality_rules": {name: dataclasses.asdict(rule) for name, rule in rules.items()},
        "files": tables,
        "figures": {
            "figures/<image>.png": "the centreline coloured by segment calibre (px) and by tortuosity, over the "
            "photograph (or the vessel map when none was given)",
            "cohort.png": "each biomarker's values over the images; check and reject images in orange and red, named",
        },
    }
    atomic_write_json(output_dir / "columns.json", dictionary)
    save_cohort_figure(output_dir / "cohort.png", figure_results)
