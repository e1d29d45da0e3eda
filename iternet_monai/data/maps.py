"""Vessel maps on disk: this project's written (:func:`save_vessel_maps`, without PyTorch, so that measuring workers
need none); any method's read as probabilities in [0, 1] and paired with their photographs by file stem
(:func:`iternet_monai.utils.files.file_stem`), every one checked before anything is scored or measured."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from iternet_monai.data.inference_inputs import output_paths
from iternet_monai.utils.errors import InputError
from iternet_monai.utils.files import KNOWN_SUFFIXES, atomic_path, file_stem, output_source

__all__ = [
    "VesselMaps",
    "overlay",
    "save_vessel_maps",
    "PROBABILITY_SUFFIXES",
    "EvaluationError",
    "read_probability_map",
    "is_binary_map",
    "match_maps",
    "check_maps",
    "pair_by_stem",
    "files_by_image",
]

PROBABILITY_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".nii", ".nii.gz")
# When an image has several maps of one name in different formats, the most precise one is read.
FORMAT_PREFERENCE = (".nii.gz", ".nii", ".npy", ".tif", ".tiff", ".png")


class EvaluationError(InputError):
    """An input that cannot be evaluated; the message names the image or map."""


class VesselMaps(NamedTuple):
    """One segmented image in the photograph's (H, W) orientation."""

    probability: np.ndarray  # float32 in [0, 1]
    mask: np.ndarray  # bool
    photo: np.ndarray  # (H, W, 3) uint8


def overlay(
    photo: np.ndarray, mask: np.ndarray, colour: Sequence[int] = (0, 255, 64), alpha: float = 0.6
) -> np.ndarray:
    """The photograph (H, W, 3 uint8) with ``mask`` pixels blended towards ``colour``.

    Args:
        photo: the photograph.
        mask: (H, W) bool, the pixels to colour.
        colour: RGB of the blend.
        alpha: how far the masked pixels move towards ``colour``.
    """
    out = photo.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    return out.round().astype(np.uint8)


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as temporary:
        Image.fromarray(array).save(temporary, format="PNG")


def save_vessel_maps(output_dir: str | Path, name: str, maps: VesselMaps, nifti: bool = False) -> None:
    """Write one image's maps, each atomically: ``<name>_prob.png`` (probability, 8 bits), ``<name>_mask.png``
    (0/255), ``<name>_overlay.png`` and, with ``nifti``, ``<name>_prob.nii.gz`` (float32, Slicer's (W, H, 1) axis
    order).

    Args:
        output_dir: the folder written to (made if missing).
        name: the image's output name.
        maps: its maps.
        nifti: write the float32 NIfTI map too.
    """
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    paths = output_paths(output_dir, name, nifti)
    _save_png(np.round(maps.probability * 255).astype(np.uint8), paths["probability"])
    _save_png(maps.mask.astype(np.uint8) * 255, paths["mask"])
    _save_png(overlay(maps.photo, maps.mask), paths["overlay"])
    if nifti:
        import nibabel as nib

        with atomic_path(paths["nifti"]) as temporary:
            volume = maps.probability.T[:, :, None].astype(np.float32)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), str(temporary))


def read_probability_map(path: str | Path) -> np.ndarray:
    """A probability map as float64 (H, W) in [0, 1]: 8-bit (/255) or 16-bit (/65535) PNG/TIFF, float TIFF, NPY,
    or NIfTI written as this project's inference writes it (first axis = width). An integer image holding only 0
    and 1 is a binary map and is read as 0/1 (not as 0 and 1/255)."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            array = np.load(path).astype(np.float64)
        elif name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            array = np.squeeze(np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)).T
        else:
            with Image.open(path) as image:
                scale = {"1": 1.0, "L": 255.0, "P": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0}
                if image.mode in ("RGB", "RGBA"):
                    rgb = np.asarray(image.convert("RGB"))
                    if not (rgb[..., 0] == rgb[..., 1]).all() or not (rgb[..., 0] == rgb[..., 2]).all():
                        raise EvaluationError(f"{path}: a colour image, not a single-channel probability map")
                    image = image.convert("L")
                array = np.asarray(image.convert("L") if image.mode == "P" else image, dtype=np.float64)
                if image.mode in scale and array.max() > 1:
                    array = array / scale[image.mode]
    except EvaluationError:
        raise
    except Exception as err:
        raise EvaluationError(f"{path}: cannot read the probability map ({err})") from err
    array = np.squeeze(array)
    if array.ndim != 2:
        raise EvaluationError(f"{path}: expected a 2-D probability map, got shape {array.shape}")
    if np.isnan(array).any():
        raise EvaluationError(f"{path}: the probability map contains NaN values")
    if not np.isfinite(array).all():
        raise EvaluationError(f"{path}: the probability map contains infinite values")
    if array.min() < 0 or array.max() > 1:
        raise EvaluationError(f"{path}: values must lie in [0, 1], got [{array.min():g}, {array.max():g}]")
    return array


def is_binary_map(array: np.ndarray) -> bool:
    """Whether a map read by :func:`read_probability_map` holds only 0 and 1."""
    return bool(np.isin(array, (0.0, 1.0)).all())


# How evaluation ranks inference's outputs of one image: a map of the image's own name or its probability map
# first, the binary mask next, other names (2) after, the overlay (a colour picture) last.
ROLE_OF_OUTPUT = {None: 0, "probability": 0, "mask": 1, "overlay": 3}


def pair_by_stem(
    stems: Iterable[str],
    files: Sequence[Path],
    claims: Callable[[Path], Iterable[str]],
    rank: Callable[[Path, str], tuple],
) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Pair each of ``stems`` with its file among ``files``: the one matcher of evaluation and measurement.

    A file is a candidate for the stems it ``claims`` (e.g. its :func:`~iternet_monai.utils.files.file_stem`).
    ``rank(file, stem)`` orders a stem's candidates, lowest first; its first element is a tier: only the candidates
    of the best tier count (a file named exactly after the image hides ``<stem>_*`` files). The best candidate is
    the stem's file unless another ties with it.

    Args:
        stems: the names to find files for.
        files: the files to pick from, in the order that ties keep.
        claims: the stems a file may belong to.
        rank: how good a file is for a stem, ``(tier, ...)``.

    Returns:
        ``{stem: file}`` for the uniquely matched stems, and ``{stem: candidates}`` for the others (best first; empty
        when no file claims the stem).
    """
    index: dict[str, list[Path]] = {}
    for path in files:
        for stem in dict.fromkeys(claims(path)):
            index.setdefault(stem, []).append(path)
    found, unmatched = {}, {}
    for stem in dict.fromkeys(stems):
        candidates = sorted(index.get(stem, []), key=lambda p: rank(p, stem))
        candidates = [p for p in candidates if rank(p, stem)[0] == rank(candidates[0], stem)[0]]
        if len(candidates) == 1 or (len(candidates) > 1 and rank(candidates[0], stem) != rank(candidates[1], stem)):
            found[stem] = candidates[0]
        else:
            unmatched[stem] = candidates
    return found, unmatched


def _map_claims(path: Path) -> list[str]:
    """The image stems a map may belong to: its own stem and every part before an underscore (``a_b_prob`` may be
    ``a_b``'s or ``a``'s)."""
    stem = file_stem(path)
    return [stem] + [stem[:i] for i, character in enumerate(stem) if character == "_"]


def _rank(path: Path, stem: str) -> tuple[int, int, int]:
    """Which of an image's candidate maps to read: a map of exactly its name before ``<stem>_*`` ones; then its own
    name or ``_prob`` first, then ``_mask`` (binary), then other names, ``_overlay`` (a colour picture) last; among
    equals the most precise format."""
    source, kind = output_source(path)
    role = ROLE_OF_OUTPUT[kind] if source == stem else 2
    suffix = next(s for s in FORMAT_PREFERENCE if path.name.lower().endswith(s))
    return int(file_stem(path) != stem), role, FORMAT_PREFERENCE.index(suffix)


def _match(items: Sequence[dict], folder: Path) -> tuple[dict[str, Path], list[str]]:
    maps = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith(PROBABILITY_SUFFIXES)]
    stems = {item["image"]: file_stem(item["image"]) for item in items}
    matched, unmatched = pair_by_stem(stems.values(), maps, _map_claims, _rank)
    found, problems = {}, []
    for image, stem in stems.items():
        if stem in matched:
            found[image] = matched[stem]
        elif unmatched[stem]:
            problems.append(f"{image}: several maps ({', '.join(p.name for p in unmatched[stem])}) in {folder}")
        else:
            suffixes = ", ".join(s.lstrip(".") for s in PROBABILITY_SUFFIXES)
            looked = f"{stem}.<ext> or {stem}_<anything>.<ext>, <ext> one of {suffixes}"
            problems.append(f"{image}: no map in {folder} (looked for {looked})")
    return found, problems


def files_by_image(folder: str | Path, prefer: str, problems: list[str]) -> dict[str, Path]:
    """Measurement's pairing: the files of ``folder`` by the image they belong to
    (:func:`~iternet_monai.utils.files.output_source`, so ``01_test_mask.gif`` is ``01_test``'s); only
    ``*<prefer>.<ext>`` files when the folder has any (an inference output folder holds ``_mask``, ``_prob`` and
    ``_overlay`` files side by side). Of two files of one image the first by name is kept and the other added to
    ``problems``.

    Args:
        folder: the folder to read.
        prefer: the name ending (``_mask``, ``_prob``) that, when some files have it, leaves the others out.
        problems: where a line per skipped file is added.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    files = [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(KNOWN_SUFFIXES)
    ]
    files = [p for p in files if file_stem(p).endswith(prefer)] or files
    stems = [output_source(p)[0] for p in files]
    found, several = pair_by_stem(stems, files, lambda p: [output_source(p)[0]], lambda p, stem: (0,))
    for stem, (kept, *skipped) in several.items():
        found[stem] = kept
        problems += [
            f"{path}: another file in {folder} has the same name stem ({kept.name}); skipped" for path in skipped
        ]
    return {stem: found[stem] for stem in dict.fromkeys(stems)}


def _map_problem(item: dict, path: Path) -> tuple[bool, str | None]:
    """(whether the map is binary, what is wrong with it or None)."""
    try:
        array = read_probability_map(path)
        with Image.open(item["image"]) as photo:
            width, height = photo.size
    except EvaluationError as err:
        return False, str(err)
    except OSError as err:
        return False, f"{item['image']}: cannot read the image ({err})"
    if array.shape != (height, width):
        return False, (
            f"{path}: the map is {array.shape[0]}x{array.shape[1]} (HxW) but its image {Path(item['image']).name} "
            f"is {height}x{width}"
        )
    return is_binary_map(array), None


def _bad_maps(problems: list[str]) -> EvaluationError:
    return EvaluationError(
        f"{len(problems)} image(s) have no usable probability map; nothing was scored:\n  " + "\n  ".join(problems)
    )


def match_maps(items: Sequence[dict], folder: str | Path) -> dict[str, Path]:
    """Each item's probability map in ``folder``, matched by file stem: ``<stem>.<ext>`` or ``<stem>_*.<ext>``.
    Inference's folder works as it is: of ``<stem>_prob.png``, ``_prob.nii.gz``, ``_mask.png`` and
    ``_overlay.png`` the ``_prob`` map is read (the NIfTI, more precise, when both are there), a ``_mask`` only when
    there is no ``_prob``. Names every image without a map, or with several equal candidates, at once."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"prediction folder {folder} does not exist")
    found, problems = _match(items, folder)
    if problems:
        raise _bad_maps(problems)
    return found


def check_maps(items: Sequence[dict], folder: str | Path) -> tuple[dict[str, Path], dict[str, bool]]:
    """Match (:func:`match_maps`) and read every item's map before any scoring: it exists, is readable, 2-D, finite,
    in [0, 1] and of its image's size. Raises one EvaluationError naming every image without a map and every bad
    map, one line each; else returns the maps and, per image, whether its map is binary."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"prediction folder {folder} does not exist")
    maps, problems = _match(items, folder)
    binary = {}
    for item in items:
        if item["image"] in maps:
            binary[item["image"]], problem = _map_problem(item, maps[item["image"]])
            problems += [problem] if problem else []
    if problems:
        raise _bad_maps(problems)
    return maps, binary
