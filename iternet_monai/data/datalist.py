"""Load, check and make datalists (MONAI's Decathlon JSON: ``{"training": [{"image", "label", "mask"}, ...]}``)."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from iternet_monai.utils.errors import InputError, optional
from iternet_monai.utils.files import PHOTO_SUFFIXES, file_stem, file_suffix

BUILTIN_DATALISTS = ("drive", "chase_db1", "chase_db1_oliveira_fov", "stare")
PATH_KEYS = ("image", "label", "mask")
# Lists whose items must have a label: the network is trained and validated against it.
LABELLED_LISTS = ("training", "validation")
GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")

# Label and FoV-mask names of the public datasets, as file-stem patterns whose "*" is the case's name: DRIVE
# (21_manual1, 21_training_mask), CHASE_DB1 (Image_01L_1stHO), STARE (im0001.ah), HRF (01_dr_manual).
FIRST_OBSERVER_PATTERNS = ("*_manual1", "*_1stHO", "*.ah", "*_manual", "*_label", "*_labels", "*_gt", "*_vessels")
OTHER_OBSERVER_PATTERNS = ("*_manual2", "*_2ndHO", "*.vk")
MASK_PATTERNS = ("*_mask", "*_fov")

logger = logging.getLogger(__name__)


class DatalistError(InputError):
    """A datalist or the files it names cannot be used; the message names every offending file or key."""


def builtin_datalist(name: str) -> str:
    """Path of a datalist shipped with the package (``drive``, ``chase_db1``, ``chase_db1_oliveira_fov``, ``stare``)."""
    if name not in BUILTIN_DATALISTS:
        raise DatalistError(f"unknown built-in datalist '{name}'; choose one of {', '.join(BUILTIN_DATALISTS)}")
    return str(resources.files(__package__) / "datalists" / f"{name}.json")


def _read_image(path: Path) -> tuple[str, tuple[int, int]] | str:
    """``(mode, (width, height))`` of an image file decoded in full (a truncated JPEG or PNG passes a header
    check), or why it cannot be used."""
    if path.is_symlink() and not path.exists():
        return f"broken symbolic link (to {os.readlink(path)})"
    if not path.exists():
        return "missing"
    if path.is_dir():
        return "a folder, not an image file"
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        if file_suffix(path) in (".nii", ".nii.gz"):
            return _read_nifti(path)
        with Image.open(path) as image:
            image.load()
            return image.mode, image.size
    except UnidentifiedImageError:
        return "not an image file (Pillow cannot identify it)"
    except PermissionError:
        return "cannot be read (permission denied)"
    except Exception as err:  # noqa: BLE001 - any decoder error means the file cannot be used; say which
        return f"truncated or corrupt image ({err.__class__.__name__}: {err})"


def _read_nifti(path: Path) -> tuple[str, tuple[int, int]] | str:
    """``("NIfTI", (width, height))`` of a 2-D NIfTI label as 3D Slicer writes it ((W, H) or (W, H, 1)), or why it
    cannot be used."""
    import nibabel as nib

    try:
        shape = nib.load(str(path)).get_fdata().shape
    except Exception as err:  # noqa: BLE001 - any reader error means the file cannot be used; say which
        return f"not a readable NIfTI file ({err.__class__.__name__}: {err})"
    if len(shape) < 2 or any(size != 1 for size in shape[2:]):
        return f"a NIfTI volume of shape {shape}, not a 2-D label"
    return "NIfTI", (shape[0], shape[1])


def _as_width_height(min_size: int | Sequence[int] | None) -> tuple[int, int]:
    if min_size is None:
        return 1, 1
    if isinstance(min_size, int):
        return min_size, min_size
    width, height = (int(v) for v in min_size)
    return width, height


def check_files(
    items: Sequence[Mapping[str, str]],
    keys: Sequence[str] = PATH_KEYS,
    min_size: int | Sequence[int] | None = None,
    required: Sequence[str] = ("image",),
    max_pixels: int | None = None,
) -> tuple[list[dict], list[str]]:
    """Check every file of every item in one pass and return ``(good_items, problems)``: the items whose files are
    all usable, and one line per bad file, ``"<path>: <what is wrong>"``, instead of raising, so a batch can
    process the good items and report the rest.

    Each file under ``keys`` is decoded in full: missing, zero-byte, unreadable, truncated and non-image files and
    dangling symbolic links are caught. The image must be RGB (not grayscale) and at least ``min_size`` pixels
    (``(width, height)`` as the bundle's ``patch_size``, or one int for both) and at most ``max_pixels`` pixels
    (``None``: no limit); labels and masks must have the
    image's size; every key in ``required`` must be present. Paths are used as given (absolute, or relative to the
    working folder).
    """
    min_width, min_height = _as_width_height(min_size)
    decoded: dict[str, tuple[str, tuple[int, int]] | str] = {}
    reasons: dict[str, list[str]] = {}
    good = []
    for item in items:
        image = str(item.get("image", "<item without an image>"))
        found, sizes = [], {}
        for key in (k for k in keys if k in item):
            path = str(item[key])
            if path not in decoded:
                decoded[path] = _read_image(Path(path))
            if isinstance(decoded[path], str):
                found.append((path, decoded[path]))
            else:
                sizes[key] = decoded[path]
        found += [(image, f"no {key} given for it") for key in required if key not in item]
        if "image" in sizes:
            mode, (width, height) = sizes.pop("image")
            if mode in GRAYSCALE_MODES:
                found.append((image, f"grayscale image (mode {mode}); IterNet needs RGB photographs"))
            if width < min_width or height < min_height:
                found.append((image, f"{width}x{height} pixels, smaller than the {min_width}x{min_height} needed"))
            if max_pixels is not None and width * height > max_pixels:
                found.append((image, f"{width}x{height} pixels, more than the limit of {max_pixels:,} (max_pixels)"))
            for key, (_, size) in sizes.items():
                if size != (width, height):
                    why = f"{key} is {size[0]}x{size[1]} but its image {image} is {width}x{height}"
                    found.append((str(item[key]), why))
        for path, why in found:
            if why not in reasons.setdefault(path, []):
                reasons[path].append(why)
        if not found:
            good.append(dict(item))
    return good, [f"{path}: {'; '.join(why)}" for path, why in reasons.items()]


def _read_items(path: Path, root: Path, key: str, missing_ok: bool) -> tuple[list[dict], list[str]]:
    """The items of ``datalist[key]`` with paths joined to ``root``, and one line per malformed entry."""
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatalistError(f"datalist {path} is not valid JSON ({err}); it must be a MONAI datalist") from err
    except OSError as err:
        raise DatalistError(f"datalist {path} cannot be read ({err.strerror or err})") from err
    if not isinstance(content, dict):
        raise DatalistError(
            f'datalist {path} holds a JSON {type(content).__name__}, not an object like {{"{key}": [...]}}'
        )
    entries = content.get(key)
    if missing_ok and not entries:
        return [], []
    if not isinstance(entries, list) or not entries:
        lists = ", ".join(k for k, v in content.items() if isinstance(v, list) and v)
        raise DatalistError(f"datalist {path} has no non-empty list '{key}' (lists present: {lists or 'none'})")
    items, problems = [], []
    for index, entry in enumerate(entries):
        entry = {"image": entry} if isinstance(entry, str) else entry
        where = f"item {index + 1} of '{key}'"
        if not isinstance(entry, dict):
            problems.append(f"{where} is a JSON {type(entry).__name__}, not a file name or an object with 'image'")
            continue
        bad = [k for k in PATH_KEYS if k in entry and (not isinstance(entry[k], str) or not entry[k])]
        if "image" not in entry or bad:
            why = f"has a '{bad[0]}' that is not a file name" if bad else "has no 'image'"
            problems.append(f"{where} {why}")
            continue
        items.append({k: str(root / v) if k in PATH_KEYS else v for k, v in entry.items()})
    return items, problems


def load_datalist(
    datalist: str | Path,
    dataset_dir: str | Path | None,
    key: str = "training",
    check: bool = True,
    min_size: int | Sequence[int] | None = None,
    missing_ok: bool = False,
) -> list[dict]:
    """Read ``datalist[key]`` (a JSON file, or a built-in datalist's name) with paths joined to ``dataset_dir`` and,
    with ``check``, verify every file first (:func:`check_files`; items of ``training`` and ``validation`` need a
    label; images at least ``min_size``).

    Raises DatalistError naming every malformed entry and every bad file in one message, so a run stops before
    training instead of failing on the first bad image hours later. With ``missing_ok``, a datalist without the
    list ``key`` gives ``[]``.
    """
    if optional(dataset_dir) is None:
        raise DatalistError(
            "no dataset folder given: pass --dataset_dir /path/to/DRIVE (the folder the datalist's paths are "
            f"relative to) and, for another dataset, --datalist (built in: {', '.join(BUILTIN_DATALISTS)})"
        )
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise DatalistError(f"dataset folder {root} does not exist; pass --dataset_dir with the dataset's folder")
    path = Path(builtin_datalist(str(datalist)) if str(datalist) in BUILTIN_DATALISTS else datalist).expanduser()
    if not path.is_file():
        raise DatalistError(
            f"datalist {path} does not exist; pass --datalist with a JSON file or a built-in name "
            f"({', '.join(BUILTIN_DATALISTS)})"
        )
    items, problems = _read_items(path, root, key, missing_ok)
    if check:
        required = ("image", "label") if key in LABELLED_LISTS else ("image",)
        problems += check_files(items, PATH_KEYS, min_size, required)[1]
    if problems:
        raise DatalistError(
            f"{len(problems)} problem(s) with '{key}' of {path} (paths relative to {root}):\n"
            + "\n".join(f"  {line}" for line in problems)
            + "\nFix or remove these files or entries, or check --dataset_dir and --datalist."
        )
    return items


def bundle_datalist(
    datalist: str | Path,
    dataset_dir: str | Path | None,
    key: str = "training",
    min_size: int | Sequence[int] | None = None,
) -> list[dict]:
    """:func:`load_datalist` for bundle configs: its DatalistError ends the command with one message and no
    traceback (the bundle's ``initialize`` installs :func:`~iternet_monai.utils.errors.report_input_errors`).

    ``validation`` may be absent: training then runs without validation, which is logged in one line.
    """
    items = load_datalist(datalist, dataset_dir, key, min_size=min_size, missing_ok=key == "validation")
    if key == "validation" and not items:
        logger.info(
            f"datalist {datalist} has no '{key}' list: training without validation; "
            "models/model.pt will be the last epoch's model"
        )
    return items


def _image_files(folder: Path) -> list[Path]:
    """Photo-suffixed files of ``folder``, sorted; dangling symbolic links included (the check names them), hidden
    files (``.DS_Store``, ``._x.jpg``, partial writes) left out."""
    return sorted(
        p
        for p in folder.iterdir()
        if file_suffix(p) in PHOTO_SUFFIXES and not p.name.startswith(".") and (p.is_file() or p.is_symlink())
    )


def _pattern_regex(pattern: str) -> re.Pattern:
    """A ``*`` name pattern as a regular expression whose group 1 is what ``*`` matched (case-insensitive)."""
    if pattern.count("*") != 1:
        raise DatalistError(f"name pattern '{pattern}' must hold exactly one '*' (the image's name), e.g. '*_1stHO'")
    before, after = pattern.split("*")
    return re.compile(f"{re.escape(before)}(.+){re.escape(after)}", re.IGNORECASE)


def _matching(files: Sequence[Path], patterns: Sequence[str]) -> dict[Path, str]:
    """The files whose name matches one of ``patterns`` (against the stem, or the whole name when the pattern has
    a suffix), each with its case name (what ``*`` matched)."""
    found = {}
    for pattern in patterns:
        regex, whole_name = _pattern_regex(pattern), bool(file_suffix(pattern))
        for file in files:
            match = regex.fullmatch(file.name if whole_name else file_stem(file))
            if match and file not in found:
                found[file] = match.group(1)
    return found


def _parts(name: str) -> tuple[str, ...]:
    """A name's whole parts: ``a_50`` -> ``('a', '50')``; ``img10`` is one part, so it never matches ``img1``."""
    return tuple(part.casefold() for part in re.split(r"[_\-. ]+", name) if part)


def _pair(images: Sequence[Path], candidates: Mapping[Path, str], kind: str) -> tuple[dict[Path, Path], list[str]]:
    """Pair images with label (or mask) files by case name: the same whole name parts, or, where that is unique
    both ways, one name extending the other by whole parts (DRIVE's ``21`` of ``21_manual1`` for ``21_training``).
    Returns the pairs and one line per image without a unique match."""
    names = {image: _parts(file_stem(image)) for image in images}
    keys = {file: _parts(key) for file, key in candidates.items()}

    def extends(a: tuple, b: tuple) -> bool:
        return a != b and (a[: len(b)] == b or b[: len(a)] == a)

    pairs, problems = {}, []
    for image, name in names.items():
        found = [file for file, key in keys.items() if key == name]
        if not found:
            found = [file for file, key in keys.items() if extends(key, name)]
            found = [f for f in found if sum(keys[f] == n or extends(keys[f], n) for n in names.values()) == 1]
        if len(found) == 1:
            pairs[image] = found[0]
        elif found:
            problems.append(f"{image}: several {kind} files match it: {', '.join(f.name for f in found)}")
        else:
            problems.append(f"{image}: no {kind} file matches it")
    for file in set(pairs.values()):
        users = [image.name for image, paired in pairs.items() if paired == file]
        if len(users) > 1:
            problems.append(f"{file}: one {kind} file matches several images: {', '.join(users)}")
    return pairs, problems


def _role_files(
    kind: str, folder: Path | None, image_folder: Path, in_image_folder: Sequence[Path], pattern: str | None
) -> tuple[dict[Path, str], str]:
    """The label (or mask) files of ``folder`` (default: beside the images), with their case names, and a line
    saying how they were found: by the user's ``pattern``, else by the public datasets' names (the first observer's,
    else another's), else, in a folder of their own, every file."""
    where = folder or image_folder
    files = in_image_folder if where == image_folder else _image_files(where)
    if pattern:
        found = _matching(files, [pattern])
        if not found:
            raise DatalistError(f"no file in {where} matches the name pattern '{pattern}'")
        return found, f"{kind}s: {len(found)} files in {where} named {pattern}"
    choices = (FIRST_OBSERVER_PATTERNS, OTHER_OBSERVER_PATTERNS) if kind == "label" else (MASK_PATTERNS,)
    for patterns in choices:
        found = _matching(files, patterns)
        if found:
            used = ", ".join(p for p in patterns if _matching(list(found), [p]))
            return found, f"{kind}s: {len(found)} files in {where} named {used}"
    if folder is not None and where != image_folder and files:
        return {file: file_stem(file) for file in files}, f"{kind}s: every file of {where} ({len(files)})"
    if folder is not None:
        raise DatalistError(f"no {kind} files in {where}")
    return {}, f"{kind}s: none beside the images" + (" (FoV masks are derived at run time)" if kind == "mask" else "")


def make_datalist(
    dataset_dir: str | Path,
    images: str | None = None,
    labels: str | None = None,
    masks: str | None = None,
    test: Sequence[str] = (),
    label_pattern: str | None = None,
    mask_pattern: str | None = None,
) -> tuple[dict, list[str]]:
    """Build a datalist for a dataset folder and check every file it lists. Returns the datalist (paths relative
    to ``dataset_dir``) and lines that say which files were paired and how.

    ``images`` is a subfolder (default ``images`` where it exists, else ``dataset_dir`` itself). Labels and masks
    are taken from their folders or, without one, from the image folder (a flat layout such as CHASE_DB1's),
    recognised by ``label_pattern`` / ``mask_pattern`` (``*_1stHO``, ``*_manual1.gif``: ``*`` stands for the
    image's name) or the public datasets' names (:data:`FIRST_OBSERVER_PATTERNS`, :data:`MASK_PATTERNS`; other
    observers' labels are left out). A file pairs with an image whose name has the same whole parts (``a_5``
    never pairs with ``a_50_label``). Images in ``test`` (names without suffix) go to ``testing``, the rest to
    ``training`` and ``validation``; without labels every image goes to ``testing``.
    """
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise DatalistError(f"dataset folder {root} does not exist")
    image_folder = root / images if images else (root / "images" if (root / "images").is_dir() else root)
    folders = {
        "image": image_folder,
        "label": root / labels if labels else None,
        "mask": root / masks if masks else None,
    }
    for kind, folder in folders.items():
        if folder is not None and not folder.is_dir():
            raise DatalistError(f"{kind} folder {folder} does not exist")
    in_image_folder = _image_files(image_folder)
    roles, notes = {}, []
    for kind, pattern in (("label", label_pattern), ("mask", mask_pattern)):
        roles[kind], note = _role_files(kind, folders[kind], image_folder, in_image_folder, pattern)
        notes.append(note)
    recognised = set(_matching(in_image_folder, FIRST_OBSERVER_PATTERNS + OTHER_OBSERVER_PATTERNS + MASK_PATTERNS))
    recognised |= set(roles["label"]) | set(roles["mask"])
    image_files = [p for p in in_image_folder if p not in recognised]
    if not image_files:
        raise DatalistError(f"no images ({', '.join(PHOTO_SUFFIXES)}) in {image_folder} besides labels and masks")
    others = recognised - set(roles["label"]) - set(roles["mask"])
    if others:
        example = min(others).name
        notes.append(f"left out {len(others)} files of {image_folder} named like other labels or masks, e.g. {example}")
    unknown = set(test) - {file_stem(p) for p in image_files}
    if unknown:
        raise DatalistError(f"test images not found in {image_folder}: {', '.join(sorted(unknown))}")
    problems, unused, pairs = [], [], {}
    for kind, candidates in roles.items():
        if candidates:
            pairs[kind], unpaired = _pair(image_files, candidates, kind)
            problems += unpaired
            unused += [
                f"{file}: {kind} file of no image" for file in sorted(set(candidates) - set(pairs[kind].values()))
            ]
    if problems:
        raise DatalistError(
            f"{len(problems)} image(s) without a unique match (give --label-pattern / --mask-pattern for other "
            "names):\n" + "\n".join(f"  {p}" for p in problems + unused)
        )
    notes += unused
    entries = [{"image": image} | {kind: pairs[kind][image] for kind in pairs} for image in image_files]
    problems = check_files(entries, PATH_KEYS, required=("image", "label") if "label" in pairs else ("image",))[1]
    if problems:
        raise DatalistError(f"{len(problems)} bad file(s):\n" + "\n".join(f"  {p}" for p in problems))
    content: dict = {"training": [], "validation": [], "testing": []}
    for entry in entries:
        relative = {kind: path.relative_to(root).as_posix() for kind, path in entry.items()}
        notes.append("  " + "  ".join(f"{kind} {path}" if kind != "image" else path for kind, path in relative.items()))
        for name in ["testing"] if file_stem(entry["image"]) in test or "label" not in pairs else LABELLED_LISTS:
            content[name].append(relative)
    if "label" not in pairs:
        notes.append(f"no label files found in {image_folder}: every image goes to 'testing' (pass --labels)")
    return {k: v for k, v in content.items() if v}, notes


def embedded_sample(folder: str | Path | None = None) -> Path:
    """The fundus photograph scikit-image ships (``skimage.data.retina()``, 1411x1411), written once as a PNG so
    a fresh install can segment a real image with no download."""
    from skimage.data import retina

    path = Path(folder or Path(tempfile.gettempdir()) / "iternet-monai") / "skimage_retina.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(retina()).save(path)
    return path


def inference_items(dataset_dir: str | Path | None, datalist: str | Path | None = None, key: str = "testing") -> list:
    """What inference segments: the datalist's ``key`` list, every image file of ``dataset_dir``, or, with neither,
    the embedded sample. Files are not opened here: the runner reports and skips unreadable ones."""
    given = optional(datalist) is not None
    if optional(dataset_dir) is None:
        if given:
            raise DatalistError(f"datalist {datalist} given without --dataset_dir, the folder its paths start from")
        return [{"image": str(embedded_sample())}]
    if given:
        return load_datalist(datalist, dataset_dir, key, False)
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise DatalistError(f"dataset folder {root} does not exist")
    files = _image_files(root)
    if not files:
        raise DatalistError(f"no images ({', '.join(PHOTO_SUFFIXES)}) in {root}")
    return [{"image": str(p)} for p in files]
