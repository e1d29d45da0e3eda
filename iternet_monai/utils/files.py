"""File names and safe writes: the one suffix list, the one file-stem rule, atomic writes, and where the bundle is.

Every command names its outputs after its inputs with :func:`file_stem` and writes them through
:func:`atomic_path`, so a kill never leaves a half-written file under a final name and ``scan.v1.png`` and
``scan.v2.png`` never share outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from iternet_monai.utils.errors import DISK_ERRORS, InputError, OutputError

__all__ = [
    "BUNDLE_DIR",
    "default_bundle_root",
    "bundle_weights",
    "file_sha256",
    "PHOTO_SUFFIXES",
    "MAP_SUFFIXES",
    "KNOWN_SUFFIXES",
    "OUTPUT_TAGS",
    "OUTPUT_SUFFIXES",
    "file_suffix",
    "file_stem",
    "output_source",
    "unique_names",
    "atomic_path",
    "atomic_write_text",
    "atomic_write_json",
    "remove_leftovers",
    "check_writable_folder",
    "EVALUATION_FILES",
    "check_evaluation_folder",
]

# Photographs, labels and masks that Pillow reads.
# The bundle, shipped inside the package (the repository's bundles/iternet links to it), so that its configs and
# weights are found wherever the package is installed and whatever folder a command runs from; here, not beside the
# checkpoint loader, so that finding it imports neither PyTorch nor MONAI.
BUNDLE_DIR = Path(__file__).resolve().parents[1] / "bundle"


def default_bundle_root() -> str:
    """The bundle folder whose ``models/model.pt`` inference uses by default, wherever the command runs: the
    package's own bundle (:data:`BUNDLE_DIR`)."""
    return str(BUNDLE_DIR)


def bundle_weights(bundle_root: str | Path) -> str | None:
    """The bundle's own ``models/model.pt`` when it exists, else None (inference then runs untrained)."""
    path = Path(bundle_root) / "models" / "model.pt"
    return str(path) if path.is_file() else None


PHOTO_SUFFIXES = (".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".png", ".ppm", ".bmp")
# Probability maps and labels in array formats (besides the image formats above).
MAP_SUFFIXES = (".npy", ".nii", ".nii.gz")
KNOWN_SUFFIXES = tuple(sorted(set(PHOTO_SUFFIXES + MAP_SUFFIXES), key=len, reverse=True))
# What inference appends to an image's output name for each file it writes; evaluate and measure read them back.
OUTPUT_TAGS = {"probability": "_prob", "mask": "_mask", "overlay": "_overlay"}
OUTPUT_SUFFIXES = {**{kind: f"{tag}.png" for kind, tag in OUTPUT_TAGS.items()}, "nifti": "_prob.nii.gz"}


def file_suffix(path: str | Path) -> str:
    """The known suffix a file name ends with, lower case (``.nii.gz`` as one), or ``""``."""
    name = Path(path).name.lower()
    return next((suffix for suffix in KNOWN_SUFFIXES if name.endswith(suffix)), "")


def file_stem(path: str | Path) -> str:
    """The file name without its known suffix: ``scan.v1.png`` -> ``scan.v1``, ``a.nii.gz`` -> ``a``,
    ``im0001.ah.ppm`` -> ``im0001.ah``. A name with no known suffix loses its last suffix only."""
    name = Path(path).name
    suffix = file_suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


def output_source(path: str | Path) -> tuple[str, str | None]:
    """The name of the image a file belongs to and which of inference's outputs it is (a key of
    :data:`OUTPUT_TAGS`), read from its stem: ``01_test_prob.png`` -> ``("01_test", "probability")``,
    ``21_training_mask.gif`` -> ``("21_training", "mask")``; a file without a tag is its own image's:
    ``01_test.png`` -> ``("01_test", None)``. This is how files of different folders are paired.

    Args:
        path: a file name or path.
    """
    stem = file_stem(path)
    for kind, tag in OUTPUT_TAGS.items():
        if stem.endswith(tag) and len(stem) > len(tag):
            return stem[: -len(tag)], kind
    return stem, None


def unique_names(paths: Sequence[str | Path]) -> list[str]:
    """One name per file to name its outputs by, unique among ``paths``: the file stem; files whose stems collide
    (``scan.png`` and ``scan.tif``, or one name in two folders) keep their suffix, then also get their folder's name
    in front (``scan_png``, ``a_01_png``)."""
    paths = [Path(p) for p in paths]
    names = [file_stem(p) for p in paths]
    for widen in (
        lambda p: f"{file_stem(p)}_{(file_suffix(p) or p.suffix).lstrip('.').replace('.', '_')}",
        lambda p: f"{p.parent.name}_{p.name.replace('.', '_')}",
    ):
        counts = Counter(names)
        names = [widen(p) if counts[n] > 1 else n for p, n in zip(paths, names)]
    return names


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that pick the format from the name work);
    when the block succeeds it is flushed to disk and renamed onto ``path``, else removed. A reader never sees a
    partial file under ``path``, and what was there stays until the new file is complete.

    A write the disk refuses (no space left, no permission, read-only) is an :class:`~.errors.OutputError`
    naming ``path`` and the cause, whether the temporary file, the writer in the block, or the rename fails."""
    path = Path(path)
    suffix = file_suffix(path) or path.suffix
    try:
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{suffix}", dir=path.parent)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err
    os.close(handle)
    temporary = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes the file owner-only; give it the mode a plain open() would
    try:
        try:
            yield temporary
        except OSError as err:
            if err.errno not in DISK_ERRORS:
                raise
            raise OutputError(f"cannot write {path}: {err.strerror}") from err
        try:
            with open(temporary, "rb") as written:
                os.fsync(written.fileno())
            os.replace(temporary, path)
        except OSError as err:
            raise OutputError(f"cannot write {path}: {err.strerror or err}") from err
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def _strict_json(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    return value


def atomic_write_json(path: str | Path, content: object) -> None:
    """Write ``content`` as strict JSON atomically: NaN and infinities become ``null``, which every JSON reader
    (R's jsonlite, JavaScript, jq) accepts, where Python's default ``NaN`` is not JSON."""
    atomic_write_text(path, json.dumps(_strict_json(content), indent=1, allow_nan=False) + "\n")


def remove_leftovers(folder: str | Path, quiet_seconds: float = 60.0) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` that a killed or crashed run left in ``folder``
    (``.<name>.*.partial<suffix>``) and that nothing has written to for ``quiet_seconds`` (a run writing there now
    keeps its own); returns the files removed."""
    now, removed = time.time(), []
    for leftover in Path(folder).glob(".*.partial*"):
        try:
            if leftover.is_file() and now - leftover.stat().st_mtime >= quiet_seconds:
                leftover.unlink()
                removed.append(leftover)
        except FileNotFoundError:  # its run completed or removed it meanwhile
            continue
    return removed


def check_writable_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Refuse, before any work, a ``folder`` that is a file or that cannot be created or written in, with one
    line naming it (an ``InputError``). Nothing is created here."""
    folder = Path(folder).expanduser()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"{what} {folder} cannot be made: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what} {folder} cannot be written: no permission to write in {existing}")
    return folder


# What ``evaluate`` writes in its output folder, besides ``overlays/<stem>.png``.
EVALUATION_FILES = ("metrics.json", "per_image.csv", "roc.png", "pr.png")


def check_evaluation_folder(output_dir: str | Path, overwrite: bool = False) -> Path:
    """Refuse (one line, an ``InputError``) an ``evaluate`` output folder that cannot be written, or that holds an
    earlier evaluation's files unless ``overwrite``: checked before the model or the maps are loaded."""
    output_dir = check_writable_folder(output_dir, "--output")
    existing = [output_dir / name for name in EVALUATION_FILES if (output_dir / name).exists()]
    existing += sorted(p for p in (output_dir / "overlays").glob("*.png") if not p.name.startswith("."))
    if existing and not overwrite:
        raise InputError(f"{existing[0]} exists; choose another output folder or pass --overwrite")
    return output_dir


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
