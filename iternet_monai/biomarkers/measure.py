"""The ``iternet-monai measure`` command and the per-image API behind it: vessel biomarkers
(:mod:`.measures`) and quality control (:mod:`.quality`) of every vessel map, written as
``biomarkers.csv``, ``segments.csv``, ``quality.csv``, the column dictionary ``columns.json`` (:mod:`.tables`), a
figure per image and one cohort figure (:mod:`.figures`). Maps are paired with their partners by
:func:`iternet_monai.data.maps.files_by_image`.

From another pipeline (inference, say), per image and then once::

    check_outputs(output_dir, stems, overwrite)              # refuse before anything is written
    result = measure_image(stem, mask, fov=..., photo=..., probability=..., mm_per_pixel=...,
                           figure=figure_path(output_dir, stem))
    write_results(results, output_dir, mm_per_pixel)         # the tables, the dictionary and the cohort figure
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from iternet_monai.biomarkers.figures import figure_path, save_vessel_figure
from iternet_monai.biomarkers.measures import measure_vessels
from iternet_monai.biomarkers.quality import DEFAULT_RULES, QualityRule, photograph_fov, quality_flags, quality_measures
from iternet_monai.biomarkers.tables import ImageResult, check_outputs, write_results
from iternet_monai.data.datalist import load_datalist
from iternet_monai.data.maps import files_by_image, read_probability_map
from iternet_monai.utils.errors import COMMAND_PREFIX, InputError, optional, print_problem
from iternet_monai.utils.files import KNOWN_SUFFIXES, OUTPUT_TAGS, unique_names

# The per-image API in one import: the tables' and figures' helpers a pipeline calls around measure_image.
__all__ = [
    "ImageResult",
    "check_outputs",
    "figure_path",
    "measure_image",
    "write_results",
    "parse_rules",
    "measure_folders",
]

PARTNERS = ("probability map", "photograph", "FoV mask")


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


def compile_measures() -> None:
    """Measure a small synthetic vessel tree (a trunk forking twice, on a round photograph) and forget it: a
    process's first measurement compiles skan's numba functions, several seconds that numba cannot cache on disk
    (skan's graphs are jitclasses), and a long-lived worker pays them here, before an image waits on it."""
    size = 128
    rows, cols = np.mgrid[:size, :size]
    across = cols - size // 2
    trunk = (abs(across) <= 2) & (rows < size // 2)
    branches = (abs(abs(across) - (rows - size // 2)) <= 2) & (rows >= size // 2)
    twig = (abs(rows - 3 * size // 4) <= 1) & (across > size // 4)
    vessels = trunk | branches | twig
    inside = (rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (0.45 * size) ** 2
    photo = np.stack([inside * 160, inside * 80, inside * 40], axis=-1).astype(np.uint8)
    photo[vessels & inside] //= 2
    measure_image("warm-up", vessels & inside, photo=photo, probability=(vessels & inside).astype(np.float32))


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


def _read_binary(path: Path, kind: str) -> np.ndarray:
    """A vessel or FoV mask (any format :func:`~iternet_monai.data.read_probability_map` reads) at 0.5."""
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


def _input_files(
    masks: str | Path | None,
    probabilities: str | Path | None,
    images: str | Path | None,
    fov_masks: str | Path | None,
    datalist: str | Path | None,
    dataset_dir: str | Path | None,
    data_key: str,
    problems: list[str],
) -> tuple[dict[str, Path], dict[str, dict[str, Path] | None]]:
    """The vessel maps by image name, and each kind of partner (:data:`PARTNERS`) by image name or None when not
    given: from the folders, paired by :func:`~iternet_monai.data.maps.files_by_image`, or from the datalist."""
    if datalist is not None:
        if masks is not None or images is not None or fov_masks is not None:
            raise InputError("--datalist gives the vessel maps, photographs and FoV masks: drop --masks, --images "
                             "and --fov-masks, or the datalist")  # fmt: skip
        vessel_maps, photographs, fov = _datalist_files(datalist, dataset_dir, data_key)
    else:
        if masks is None:
            raise InputError("give the vessel maps: --masks FOLDER, or --datalist with --dataset-dir")
        vessel_maps = files_by_image(masks, OUTPUT_TAGS["mask"], problems)
        if not vessel_maps:
            raise InputError(f"no vessel maps ({', '.join(KNOWN_SUFFIXES)}) in {masks}")
        photographs = files_by_image(images, "", problems) if images else None
        fov = files_by_image(fov_masks, "_mask", problems) if fov_masks else None  # DRIVE names them *_mask
    probability_maps = files_by_image(probabilities, OUTPUT_TAGS["probability"], problems) if probabilities else None
    return vessel_maps, dict(zip(PARTNERS, (probability_maps, photographs, fov)))


def _measure_file(
    stem: str,
    path: Path,
    files: Mapping[str, Path],
    output_dir: str | Path,
    mm_per_pixel: float | None,
    rules: Mapping[str, QualityRule] | None,
) -> ImageResult:
    """Read one vessel map and its partner ``files`` (by kind), check their sizes agree, and measure it."""
    mask = _read_binary(path, "vessel map")
    probability = read_probability_map(files["probability map"]) if "probability map" in files else None
    photo = _read_photo(files["photograph"]) if "photograph" in files else None
    fov = _read_binary(files["FoV mask"], "FoV mask") if "FoV mask" in files else None
    for kind, array in zip(PARTNERS, (probability, photo, fov)):
        if array is not None and array.shape[:2] != mask.shape:
            raise InputError(
                f"{files[kind]}: the {kind} is {array.shape[0]}x{array.shape[1]} (HxW) but the vessel map "
                f"{path.name} is {mask.shape[0]}x{mask.shape[1]}"
            )
    return measure_image(
        stem, mask, fov, photo, probability, mm_per_pixel, rules=rules, figure=figure_path(output_dir, stem)
    )


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
    if mm_per_pixel is not None and not mm_per_pixel > 0:
        raise InputError(f"--mm-per-pixel must be positive, got {mm_per_pixel}")
    problems: list[str] = []
    vessel_maps, partners = _input_files(
        masks, probabilities, images, fov_masks, datalist, dataset_dir, data_key, problems
    )
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
            results.append(_measure_file(stem, path, files, output_dir, mm_per_pixel, rules))
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
