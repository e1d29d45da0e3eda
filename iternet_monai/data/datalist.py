"""Load, check and make datalists (MONAI's Decathlon JSON: ``{"training": [{"image", "label", "mask"}, ...]}``)."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import InputError

BUILTIN_DATALISTS = ("drive", "chase_db1", "chase_db1_oliveira_fov", "stare")
IMAGE_SUFFIXES = (".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".png", ".ppm", ".bmp")
PATH_KEYS = ("image", "label", "mask")
_MAX_LISTED = 10


class DatalistError(InputError):
    """A datalist or the files it names cannot be used; the message names every offending file or key."""


def builtin_datalist(name: str) -> str:
    """Path of a datalist shipped with the package (``drive``, ``chase_db1``, ``chase_db1_oliveira_fov``, ``stare``)."""
    if name not in BUILTIN_DATALISTS:
        raise DatalistError(f"unknown built-in datalist '{name}'; choose one of {', '.join(BUILTIN_DATALISTS)}")
    return str(resources.files(__package__) / "datalists" / f"{name}.json")


def _file_problem(path: Path) -> str | None:
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - reading the header is the check
    except (UnidentifiedImageError, OSError) as err:
        return f"not a readable image ({err.__class__.__name__})"
    return None


def _image_problem(item: dict) -> str | None:
    """Header-level checks of one item: RGB-like image, label and mask of the image's size."""
    with Image.open(item["image"]) as im:
        mode, size = im.mode, im.size
    if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "F"):
        return f"{item['image']}: grayscale image (mode {mode}); IterNet needs RGB photographs"
    for key in ("label", "mask"):
        if key in item:
            with Image.open(item[key]) as other:
                (width, height), other_size = size, other.size
            if other_size != size:
                return (
                    f"{item[key]}: {key} is {other_size[0]}x{other_size[1]} but its image {item['image']} "
                    f"is {width}x{height}"
                )
    return None


def _bullets(lines: Sequence[str]) -> str:
    shown = "\n".join(f"  {line}" for line in lines[:_MAX_LISTED])
    more = f"\n  ... and {len(lines) - _MAX_LISTED} more" if len(lines) > _MAX_LISTED else ""
    return shown + more


def load_datalist(
    datalist: str | Path, dataset_dir: str | Path | None, key: str = "training", check: bool = True
) -> list[dict]:
    """Read ``datalist[key]`` with paths joined to ``dataset_dir`` and, with ``check``, verify every file first.

    Raises DatalistError naming every missing, unreadable or inconsistent file (or the missing folder or key), so
    a run stops before training instead of failing on the first bad image hours later.
    """
    if dataset_dir is None or str(dataset_dir) in ("", "None"):
        raise DatalistError(
            "no dataset folder given: pass --dataset_dir /path/to/DRIVE (the folder the datalist's paths are "
            f"relative to) and, for another dataset, --datalist (built in: {', '.join(BUILTIN_DATALISTS)})"
        )
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise DatalistError(f"dataset folder {root} does not exist; pass --dataset_dir with the dataset's folder")
    path = Path(datalist).expanduser()
    if not path.is_file():
        raise DatalistError(
            f"datalist {path} does not exist; pass --datalist with a JSON file, e.g. datalists/drive.json"
        )
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatalistError(f"datalist {path} is not valid JSON: {err}") from err
    if not isinstance(content, dict) or not isinstance(content.get(key), list) or not content[key]:
        keys = ", ".join(k for k, v in content.items() if isinstance(v, list)) if isinstance(content, dict) else ""
        raise DatalistError(f"datalist {path} has no non-empty list '{key}' (lists present: {keys or 'none'})")
    items = []
    for index, entry in enumerate(content[key]):
        entry = {"image": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or "image" not in entry:
            raise DatalistError(f"datalist {path}: entry {index} of '{key}' has no 'image' path")
        items.append({k: str(root / v) if k in PATH_KEYS else v for k, v in entry.items()})
    if check:
        problems = [
            f"{item[k]}: {why}"
            for item in items
            for k in PATH_KEYS
            if k in item
            for why in [_file_problem(Path(item[k]))]
            if why
        ]
        if not problems:
            problems = [p for p in map(_image_problem, items) if p]
        if problems:
            raise DatalistError(
                f"{len(problems)} problem(s) with the files of '{key}' in {path} (relative to {root}):\n"
                f"{_bullets(problems)}\nCheck --dataset_dir and --datalist."
            )
    return items


def bundle_datalist(datalist: str | Path, dataset_dir: str | Path | None, key: str = "training") -> list[dict]:
    """:func:`load_datalist` for bundle configs: a bad dataset ends the command with one message, no traceback."""
    try:
        return load_datalist(datalist, dataset_dir, key)
    except DatalistError as err:
        raise SystemExit(f"iternet: {err}") from None


def _image_files(folder: Path) -> list[Path]:
    """Photographs in ``folder``; a dangling link is listed too, so that it is reported rather than dropped."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or p.is_symlink()))


def _case_id(stem: str) -> str:
    """The leading number of a file stem (``21_training`` -> ``21``), or the stem when it has none."""
    match = re.match(r"\D*?(\d+)", stem)
    return match.group(0) if match else stem


def _match(image: Path, candidates: list[Path], kind: str) -> Path:
    stem = image.name.split(".")[0]
    for rule in (
        lambda c: c.name.split(".")[0] == stem,
        lambda c: c.name.startswith(stem),
        lambda c: _case_id(c.name.split(".")[0]) == _case_id(stem),
    ):
        found = [c for c in candidates if rule(c)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DatalistError(f"{image}: several {kind} files match it: {', '.join(f.name for f in found)}")
    raise DatalistError(f"{image}: no {kind} file matches it in {candidates[0].parent if candidates else kind}")


def make_datalist(
    dataset_dir: str | Path,
    images: str = "images",
    labels: str | None = None,
    masks: str | None = None,
    test: Sequence[str] = (),
) -> dict:
    """Build a datalist from folders (relative to ``dataset_dir``): every image, with its label and mask matched
    by file name (same stem, a stem that extends the image's, or the same leading number). Images whose stem is in
    ``test`` go to ``testing``; the rest to ``training`` (and ``validation``, as the bundle validates on them)."""
    root = Path(dataset_dir).expanduser()
    folders = {
        "image": root / images,
        "label": root / labels if labels else None,
        "mask": root / masks if masks else None,
    }
    for kind, folder in folders.items():
        if folder is not None and not folder.is_dir():
            raise DatalistError(f"{kind} folder {folder} does not exist")
    image_files = _image_files(folders["image"])
    if not image_files:
        raise DatalistError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folders['image']}")
    others = {k: [p for p in _image_files(f) if p not in image_files] for k, f in folders.items() if f and k != "image"}
    unknown = set(test) - {p.name.split(".")[0] for p in image_files}
    if unknown:
        raise DatalistError(f"test images not found in {folders['image']}: {', '.join(sorted(unknown))}")
    content: dict = {"training": [], "validation": [], "testing": []}
    for image in image_files:
        entry = {"image": image.relative_to(root).as_posix()}
        for kind, candidates in others.items():
            entry[kind] = _match(image, candidates, kind).relative_to(root).as_posix()
        split = ["testing"] if image.name.split(".")[0] in test else ["training", "validation"]
        for name in split:
            content[name].append(entry)
    return {k: v for k, v in content.items() if v}


def embedded_sample(folder: str | Path | None = None) -> Path:
    """The fundus photograph scikit-image ships (``skimage.data.retina()``, 1411x1411), written once as a PNG so
    a fresh install can segment a real image with no download."""
    from skimage.data import retina

    path = Path(folder or Path(tempfile.gettempdir()) / "iternet-monai") / "skimage_retina.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(retina()).save(path)
    return path


def check_files(items: Sequence[dict], keys: Sequence[str] = PATH_KEYS, min_size: int = 1) -> tuple[list, list]:
    """Interim checker (the data work replaces it): items whose files exist and decode, and one line per bad one."""
    good, problems = [], []
    for item in items:
        why = None
        for key in keys:
            if key in item:
                path = Path(item[key])
                why = _file_problem(path)
                if why is None:
                    try:
                        with Image.open(path) as im:
                            im.load()
                            if im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "F") and key == "image":
                                why = f"a grayscale image (mode {im.mode}); IterNet needs RGB photographs"
                    except Exception as err:  # noqa: BLE001
                        why = f"not a readable image ({err.__class__.__name__})"
                if why:
                    problems.append(f"{path}: {why}")
                    break
        if why is None:
            good.append(item)
    return good, problems


def inference_items(dataset_dir: str | Path | None, datalist: str | Path | None = None, key: str = "testing") -> list:
    """What inference segments: the datalist's ``key`` list, every image file of ``dataset_dir``, or, with neither,
    the embedded sample. Files are not opened here: the runner reports and skips unreadable ones."""
    if dataset_dir is None or str(dataset_dir) in ("", "None"):
        return [{"image": str(embedded_sample())}]
    if datalist is not None and str(datalist) not in ("", "None"):
        return load_datalist(datalist, dataset_dir, key, check=False)
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise DatalistError(f"dataset folder {root} does not exist")
    files = _image_files(root)
    if not files:
        raise DatalistError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    return [{"image": str(p)} for p in files]
