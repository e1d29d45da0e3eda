"""Helpers to serve the bundle with MONAI Label: set up the app (:mod:`iternet_monai.monailabel_app`), the command
that starts it, photographs converted for its datastore, and the check that refuses unusable requests. MONAI Label
itself lives in its own environment (``tox -e monailabel``); these helpers only copy files and name commands."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image

from .errors import InputError
from .files import PHOTO_SUFFIXES, atomic_path, atomic_write_text, file_suffix, unique_names

__all__ = [
    "DATASTORE_SUFFIXES",
    "COPIED_SUFFIXES",
    "setup_app",
    "convert_studies",
    "server_command",
    "RequirePhotod",
]

# What MONAI Label 0.8.5's LocalDatastore lists (MONAI_LABEL_DATASTORE_FILE_EXT; .tif is read as pathology there),
# and what convert-studies copies unchanged: every other photograph becomes RGB PNG, and .jpeg is copied as .jpg.
DATASTORE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".jpg", ".png", ".tif", ".svs", ".xml")
COPIED_SUFFIXES = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}


APP_MAIN = '''"""MONAI Label app of the IterNet bundle in model/iternet (written by iternet-monai label-app)."""

from iternet_monai.monailabel_app import IterNetApp  # noqa: F401 - MONAI Label loads the MONAILabelApp subclass
'''


def setup_app(app_dir: str | Path, bundle: str | Path) -> Path:
    """Make ``app_dir`` a MONAI Label app serving a copy of ``bundle`` (:mod:`iternet_monai.monailabel_app`):
    ``main.py``, and ``model/iternet`` with ``models/`` for its weights. Refuses to replace an installed bundle,
    whose ``models/`` may hold fine-tuned weights. Returns the app folder."""
    app, bundle = Path(app_dir), Path(bundle)
    if not (bundle / "configs" / "inference.json").is_file():
        raise InputError(f"{bundle} is not a bundle folder (no configs/inference.json); pass --bundle with one")
    target = app / "model" / "iternet"
    if target.exists():
        raise InputError(f"{target} exists; remove it to install the bundle again (its models/ would be lost)")
    ignore = shutil.ignore_patterns("eval", "predictions", "previous", "replaced", "*.ts", "*.onnx")
    shutil.copytree(bundle, target, symlinks=False, ignore=ignore)
    (target / "models").mkdir(exist_ok=True)
    atomic_write_text(app / "main.py", APP_MAIN)
    return app


def server_command(
    app: str | Path, studies: str | Path, port: int = 8000, host: str = "127.0.0.1", python: str = sys.executable
) -> list[str]:
    """The command starting MONAI Label with the app of :func:`setup_app` on ``studies``, on this machine only."""
    return [
        python,
        "-m",
        "monailabel.main",
        "start_server",
        "--app",
        str(app),
        "--studies",
        str(studies),
        "--conf",
        "preload",
        "false",
        "--host",
        host,
        "--port",
        str(port),
    ]


def convert_studies(source: str | Path, target: str | Path, overwrite: bool = False) -> list[Path]:
    """Copy the photographs of ``source`` into ``target`` as files MONAI Label's datastore lists: PNG and JPEG are
    copied (``.jpeg`` as ``.jpg``), GIF, PPM, TIFF and BMP become RGB PNG, each under a unique name
    (:func:`~iternet_monai.files.unique_names`) and written atomically. Nothing is written when a target file
    exists, unless ``overwrite``."""
    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise InputError(f"study folder {source} does not exist; give the folder of photographs to copy")
    photos = [
        p
        for p in sorted(source.iterdir())
        if p.is_file() and not p.name.startswith(".") and file_suffix(p) in PHOTO_SUFFIXES
    ]
    if not photos:
        raise InputError(f"no photographs ({', '.join(PHOTO_SUFFIXES)}) in {source}")
    outputs = [
        target / f"{n}{COPIED_SUFFIXES.get(file_suffix(p), '.png')}" for p, n in zip(photos, unique_names(photos))
    ]
    existing = [str(out) for out in outputs if out.exists()]
    if existing and not overwrite:
        raise InputError(f"{len(existing)} file(s) exist, e.g. {existing[0]}; pass --overwrite to replace them")
    target.mkdir(parents=True, exist_ok=True)
    for path, out in zip(photos, outputs):
        with atomic_path(out) as temporary:
            if file_suffix(path) in COPIED_SUFFIXES:
                shutil.copyfile(path, temporary)
            else:
                with Image.open(path) as image:
                    image.convert("RGB").save(temporary, format="PNG")
    return outputs


class RequirePhotod(MapTransform):
    """First step of the bundle's ``preprocessing``: a request MONAI Label cannot serve is refused before any work,
    with the HTTP status a client can act on instead of MONAI Label's generic 500: an image that does not exist
    (an unknown image id) 404, one above ``max_pixels`` 413 (read from the header: a 6000x6000 upload would hold a
    CPU server for half an hour), one below ``min_size`` pixels a side or not a usable RGB photograph
    (:func:`~iternet_monai.data.check_files`) 415. MONAI Label calls the transforms directly, so FastAPI's
    HTTPException reaches the client; where FastAPI is not installed (batch inference, which checks its files
    first) the error is an InputError.

    MONAI Label passes neither the id of an unknown image (it becomes ``''``) nor an upload's file name (it saves
    the upload as a temporary file), so the messages say "the requested image" and "the uploaded file" there."""

    def __init__(
        self, keys: KeysCollection = "image", max_pixels: int | None = 4096 * 4096, min_size: int = 16
    ) -> None:
        super().__init__(keys)
        self.max_pixels, self.min_size = max_pixels, min_size

    @staticmethod
    def _refuse(status: int, message: str) -> Exception:
        try:
            from fastapi import HTTPException  # only in MONAI Label's environment
        except ImportError:
            return InputError(message)
        return HTTPException(status_code=status, detail=message)

    @staticmethod
    def _name(path: Path) -> str:
        uploaded = path.parent == Path(tempfile.gettempdir()) and path.name.startswith("tmp")
        return "the uploaded file" if uploaded else path.name

    def __call__(self, data: Mapping) -> dict:
        from .data import check_files

        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if not isinstance(value, (str, Path)):
                continue
            if not str(value) or not Path(value).is_file():
                shown = f" ('{value}')" if str(value) else ""
                raise self._refuse(404, f"the requested image{shown} is not in the datastore")
            path, name = Path(value), self._name(Path(value))
            try:
                with Image.open(path) as image:
                    width, height = image.size
            except Exception as err:
                raise self._refuse(415, f"{name} is not a readable image ({err.__class__.__name__})") from err
            if self.max_pixels is not None and width * height > self.max_pixels:
                raise self._refuse(
                    413, f"{name} is {width}x{height} pixels, more than the limit of {self.max_pixels:,} (max_pixels)"
                )
            _, problems = check_files([{"image": str(path)}], ("image",), min_size=self.min_size)
            if problems:
                raise self._refuse(415, f"{name}: {problems[0].split(': ', 1)[1]}")
        return d
