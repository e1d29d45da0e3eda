"""Load and check datalists (MONAI's Decathlon JSON: ``{"training": [{"image", "label", "mask"}, ...]}``)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from iternet_monai.utils.errors import InputError, optional
from iternet_monai.utils.files import PHOTO_SUFFIXES, file_suffix

BUILTIN_DATALISTS = ("drive", "chase_db1", "chase_db1_oliveira_fov", "stare")
PATH_KEYS = ("image", "label", "mask")
# Lists whose items must have a label: the network is trained and validated against it.
LABELLED_LISTS = ("training", "validation")
GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


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


def image_files(folder: Path) -> list[Path]:
    """Photo-suffixed files of ``folder``, sorted; dangling symbolic links included (the check names them), hidden
    files (``.DS_Store``, ``._x.jpg``, partial writes) left out."""
    return sorted(
        p
        for p in folder.iterdir()
        if file_suffix(p) in PHOTO_SUFFIXES and not p.name.startswith(".") and (p.is_file() or p.is_symlink())
    )


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
    files = image_files(root)
    if not files:
        raise DatalistError(f"no images ({', '.join(PHOTO_SUFFIXES)}) in {root}")
    return [{"image": str(p)} for p in files]
