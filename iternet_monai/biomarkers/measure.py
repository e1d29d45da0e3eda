"""The ``iternet-monai measure`` command and the per-image API behind it: vessel biomarkers
(:mod:`.measures`) and quality control (:mod:`.quality`) of every vessel map, written as
``biomarkers.csv``, ``segments.csv``, ``quality.csv``, the column dictionary ``columns.json``, a figure per image and
one cohort figure.

From another pipeline (inference, say), per image and then once::

    check_outputs(output_dir, stems, overwrite)              # refuse before anything is written
    result = measure_image(stem, mask, fov=..., photo=..., probability=..., mm_per_pixel=...,
                           figure=figure_path(output_dir, stem))
    write_results(results, output_dir, mm_per_pixel)         # the tables, the dictionary and the cohort figure
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from iternet_monai import __version__
from iternet_monai.biomarkers.measures import (
    CENTRELINE_SIGMA,
    IMAGE_COLUMNS,
    SEGMENT_COLUMNS,
    VesselMeasures,
    measure_vessels,
    mm_column,
)
from iternet_monai.biomarkers.quality import (
    DEFAULT_RULES,
    QUALITY_COLUMNS,
    QualityRule,
    photograph_fov,
    quality_flags,
    quality_measures,
)
from iternet_monai.utils.errors import COMMAND_PREFIX, InputError, optional, print_problem
from iternet_monai.utils.files import (
    KNOWN_SUFFIXES,
    OUTPUT_TAGS,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    check_writable_folder,
    file_stem,
    output_source,
    unique_names,
)

__all__ = [
    "TABLES",
    "ImageResult",
    "check_outputs",
    "figure_path",
    "measure_image",
    "write_results",
    "parse_rules",
    "measure_folders",
]

TABLES = ("biomarkers.csv", "segments.csv", "quality.csv", "columns.json", "cohort.png")
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


@dataclasses.dataclass
class ImageResult:
    """One image's rows: ``image`` (biomarkers), ``segments`` and ``quality``, each keyed by column name."""

    stem: str
    image: dict
    segments: list[dict]
    quality: dict


def figure_path(output_dir: str | Path, stem: str) -> Path:
    """Where the per-image figure of ``stem`` goes: ``<output_dir>/figures/<stem>.png``."""
    return Path(output_dir) / "figures" / f"{stem}.png"


def check_outputs(output_dir: str | Path, stems: Sequence[str], overwrite: bool = False) -> None:
    """Refuse (InputError naming the first file) when ``output_dir`` already holds an output of this command for
    these images, unless ``overwrite``, or when it cannot be written (a file, no permission); creates the folders."""
    output_dir = check_writable_folder(output_dir, "--output")
    existing = [output_dir / name for name in TABLES] + [figure_path(output_dir, stem) for stem in stems]
    existing = [path for path in existing if path.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} exists; choose another output folder or pass --overwrite")
    (output_dir / "figures").mkdir(parents=True, exist_ok=True)


def measure_image(
    stem: str,
    mask: np.ndarray,
    fov: np.ndarray | None = None,
    photo: np.ndarray | None = None,
    probability: np.ndarray | None = None,
    mm_per_pixel: float | None = None,
    tta_disagreement: float | np.ndarray | None = None,
    rules: Mapping[str, QualityRule] | None = None,
    figure: str | Path | None = None,
) -> ImageResult:
    """Biomarkers and quality of one binary vessel map (H, W). The FoV is ``fov`` (a mask file), else derived from
    ``photo`` (H, W, 3 uint8) by :func:`~.quality.photograph_fov`, else the whole image. With ``figure``,
    the centreline coloured by calibre and by tortuosity over the photograph (or the mask) is saved there."""
    source = "mask file" if fov is not None else "derived from the photograph" if photo is not None else ""
    if fov is None and photo is not None:
        fov = photograph_fov(photo)
    measures = measure_vessels(mask, fov, mm_per_pixel)
    quality = quality_flags(
        quality_measures(
            photo,
            fov,
            probability,
            vessel_area_density=measures.image["vessel_area_density"],
            tta_disagreement=tta_disagreement,
            fov_source=source,
        ),
        rules,
    )
    if figure is not None:
        save_vessel_figure(figure, stem, measures, photo if photo is not None else mask)
    return ImageResult(stem, measures.image, measures.segments, quality)


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


def save_cohort_figure(path: str | Path, results: Sequence[ImageResult]) -> None:
    """One panel per biomarker: every image's value (jittered dots), flagged images coloured and named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = COHORT_COLUMNS
    ncols = 4
    nrows = -(-len(columns) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), dpi=100, squeeze=False)
    jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(results))
    verdicts = [r.quality["quality"] for r in results]
    for ax, column in zip(axes.ravel(), columns):
        unit = IMAGE_COLUMNS[column][1] if results and mm_column(column) in results[0].image else None
        column, unit = (mm_column(column), unit) if unit else (column, IMAGE_COLUMNS[column][0])
        values = np.array([r.image[column] for r in results], np.float64)
        ax.boxplot(
            values[np.isfinite(values)], positions=[0], widths=0.7, showfliers=False, medianprops={"color": "grey"}
        )
        for verdict, colour in VERDICT_COLOURS.items():
            chosen = [i for i, v in enumerate(verdicts) if v == verdict]
            ax.scatter(jitter[chosen], values[chosen], s=14, color=colour, label=verdict, zorder=3)
        for i, verdict in enumerate(verdicts):
            if verdict != "good" and np.isfinite(values[i]):
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


def parse_rules(settings: Sequence[str]) -> dict[str, QualityRule]:
    """``["exposure.check_below=0.08", ...]`` as rules (the defaults with those limits changed); ``none`` removes
    a limit."""
    rules = dict(DEFAULT_RULES)
    limits = [f.name for f in dataclasses.fields(QualityRule)]
    for setting in settings:
        name, _, value = setting.partition("=")
        measure, _, limit = name.partition(".")
        if measure not in rules or limit not in limits or not value:
            raise InputError(
                f"--qc {setting}: expected MEASURE.LIMIT=VALUE with MEASURE one of {', '.join(rules)} and LIMIT one "
                f"of {', '.join(limits)}"
            )
        try:
            number = None if optional(value) is None else float(value)
        except ValueError:
            raise InputError(f"--qc {setting}: {value!r} is not a number") from None
        rules[measure] = dataclasses.replace(rules[measure], **{limit: number})
    return rules


def _folder_files(folder: str | Path, prefer: str, problems: list[str]) -> dict[str, Path]:
    """The files of ``folder`` by the image they belong to (:func:`~iternet_monai.utils.files.output_source`); only
    ``*<prefer>.<ext>`` files when the folder has any (an inference output folder holds ``_mask``, ``_prob`` and
    ``_overlay`` files side by side)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    files = [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(KNOWN_SUFFIXES)
    ]
    preferred = [p for p in files if file_stem(p).endswith(prefer)]
    found: dict[str, Path] = {}
    for path in preferred or files:
        stem = output_source(path)[0]
        if stem in found:
            problems.append(f"{path}: another file in {folder} has the same name stem ({found[stem].name}); skipped")
            continue
        found[stem] = path
    return found


def _read_binary(path: Path, kind: str) -> np.ndarray:
    """A vessel or FoV mask (any format :func:`~iternet_monai.data.read_probability_map` reads) at 0.5."""
    from iternet_monai.data.maps import read_probability_map

    try:
        return read_probability_map(path) >= 0.5
    except InputError as err:
        if err.__cause__ is None:
            raise InputError(str(err).replace("probability map", kind)) from err
        raise InputError(f"{path}: cannot read the {kind} ({err.__cause__})") from err


def _read_photo(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as err:
        raise InputError(f"{path}: cannot read the photograph ({err})") from err


def _one_line(error: Exception, path: Path, partners) -> str:
    """The error's last line, prefixed with the vessel map's path unless it already starts with a file's path."""
    message = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
    named = any(message.startswith(str(p)) for p in (path, *partners))
    return message if named else f"{path}: {message}"


def measure_folders(
    masks: str | Path | None,
    output_dir: str | Path,
    probabilities: str | Path | None = None,
    images: str | Path | None = None,
    fov_masks: str | Path | None = None,
    mm_per_pixel: float | None = None,
    rules: Mapping[str, QualityRule] | None = None,
    overwrite: bool = False,
    datalist: str | Path | None = None,
    dataset_dir: str | Path | None = None,
    data_key: str = "testing",
) -> int:
    """The ``measure`` command: every vessel map of ``masks`` with its probability map, photograph and FoV mask
    (matched by file stem), or, with ``datalist``, the ``label`` of every item of its ``data_key`` list with the
    item's ``image`` and ``mask`` (e.g. a dataset's reference annotations), written to ``output_dir``. A file that
    cannot be used gets one line on stderr naming it and the rest are measured; returns 0, or 1 when some image
    failed."""
    from iternet_monai.data.maps import read_probability_map

    if mm_per_pixel is not None and not mm_per_pixel > 0:
        raise InputError(f"--mm-per-pixel must be positive, got {mm_per_pixel}")
    problems: list[str] = []
    if datalist is not None:
        if masks is not None or images is not None or fov_masks is not None:
            raise InputError("--datalist gives the vessel maps, photographs and FoV masks: drop --masks, --images "
                             "and --fov-masks, or the datalist")  # fmt: skip
        vessel_maps, photographs, fov = _datalist_files(datalist, dataset_dir, data_key)
    else:
        if masks is None:
            raise InputError("give the vessel maps: --masks FOLDER, or --datalist with --dataset-dir")
        vessel_maps = _folder_files(masks, OUTPUT_TAGS["mask"], problems)
        if not vessel_maps:
            raise InputError(f"no vessel maps ({', '.join(KNOWN_SUFFIXES)}) in {masks}")
        photographs = _folder_files(images, "", problems) if images else None
        fov = _folder_files(fov_masks, "_mask", problems) if fov_masks else None  # DRIVE names them *_mask
    probability_maps = _folder_files(probabilities, OUTPUT_TAGS["probability"], problems) if probabilities else None
    partners = {
        "probability map": probability_maps,
        "photograph": photographs,
        "FoV mask": fov,
    }
    check_outputs(output_dir, list(vessel_maps), overwrite)
    for line in problems:
        print_problem(line, COMMAND_PREFIX)
    results, failed = [], 0
    for stem, path in vessel_maps.items():
        files = {}
        for kind, found in partners.items():
            if found is not None and stem not in found:
                print_problem(f"{path}: no {kind} for {stem}; measured without one", COMMAND_PREFIX)
            elif found is not None:
                files[kind] = found[stem]
        try:
            mask = _read_binary(path, "vessel map")
            probability = read_probability_map(files["probability map"]) if "probability map" in files else None
            photo = _read_photo(files["photograph"]) if "photograph" in files else None
            fov = _read_binary(files["FoV mask"], "FoV mask") if "FoV mask" in files else None
            for kind, array in (("probability map", probability), ("photograph", photo), ("FoV mask", fov)):
                if array is not None and array.shape[:2] != mask.shape:
                    raise InputError(
                        f"{files[kind]}: the {kind} is {array.shape[0]}x{array.shape[1]} (HxW) but the vessel map "
                        f"{path.name} is {mask.shape[0]}x{mask.shape[1]}"
                    )
            results.append(
                measure_image(
                    stem, mask, fov, photo, probability, mm_per_pixel, rules=rules, figure=figure_path(output_dir, stem)
                )
            )
        except (InputError, OSError, ValueError) as err:
            print_problem(_one_line(err, path, files.values()), COMMAND_PREFIX)
            failed += 1
    if results:
        write_results(results, output_dir, mm_per_pixel, rules)
    flagged = sum(r.quality["quality"] != "good" for r in results)
    print(
        f"measured {len(results)} of {len(vessel_maps)} vessel maps ({flagged} flagged by quality control); wrote "
        f"{output_dir}/biomarkers.csv, segments.csv, quality.csv, columns.json, cohort.png and figures/"
    )
    return 1 if failed else 0


def _datalist_files(
    datalist: str | Path, dataset_dir: str | Path | None, key: str
) -> tuple[dict[str, Path], dict[str, Path], dict[str, Path] | None]:
    """(vessel maps, photographs, FoV masks or None) of the labelled items of ``datalist[key]``, each by the output
    name of its photograph (:func:`~iternet_monai.utils.files.unique_names`, as inference names its outputs)."""
    from iternet_monai.data import load_datalist

    if dataset_dir is None:
        raise InputError(f"datalist {datalist} given without --dataset-dir, the folder its paths start from")
    items = load_datalist(datalist, dataset_dir, key, False)
    labelled = [item for item in items if item.get("label")]
    if not labelled:
        raise InputError(f"no item of the '{key}' list of {datalist} has a label to measure")
    names = unique_names([item["image"] for item in labelled])
    fov = {n: Path(item["mask"]) for n, item in zip(names, labelled) if item.get("mask")}
    return (
        {n: Path(item["label"]) for n, item in zip(names, labelled)},
        {n: Path(item["image"]) for n, item in zip(names, labelled)},
        fov or None,
    )
