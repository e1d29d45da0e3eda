"""Helpers to use the bundle in MONAI Label's ``monaibundle`` app. MONAI Label itself lives in its own environment
(``tox -e monailabel``); these helpers only call its command line and copy files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image

from .errors import InputError

__all__ = [
    "DATASTORE_SUFFIXES",
    "CONVERTED_SUFFIXES",
    "setup_app",
    "convert_studies",
    "server_command",
    "RequireImaged",
]

# What MONAI Label's LocalDatastore lists by default, and what this project converts to PNG for it.
DATASTORE_SUFFIXES = (".png", ".jpg", ".jpeg", ".nii.gz", ".nii", ".nrrd")
CONVERTED_SUFFIXES = (".gif", ".ppm", ".tif", ".tiff", ".bmp")


def setup_app(app_dir: str | Path, bundle: str | Path, name: str = "iternet", python: str = sys.executable) -> Path:
    """Download MONAI Label's ``monaibundle`` app into ``app_dir`` (offline: it is copied from the installed
    package) and put a copy of ``bundle`` in it as ``model/<name>``. Returns the app folder."""
    app_dir, bundle = Path(app_dir), Path(bundle)
    if not (bundle / "configs" / "inference.json").is_file():
        raise FileNotFoundError(f"{bundle} is not a bundle folder (no configs/inference.json)")
    app = app_dir / "monaibundle"
    if not app.is_dir():
        subprocess.run(
            [python, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle", "--output", str(app_dir)],
            check=True,
        )
    target = app / "model" / name
    if target.exists():
        raise FileExistsError(f"{target} exists; remove it to install the bundle again (its models/ would be lost)")
    shutil.copytree(bundle, target, symlinks=False, ignore=shutil.ignore_patterns("eval", "predictions", "*.ts"))
    return app


def server_command(
    app: str | Path,
    studies: str | Path,
    port: int = 8000,
    name: str = "iternet",
    host: str = "127.0.0.1",
    python: str = sys.executable,
) -> list[str]:
    """The command starting MONAI Label on ``studies`` with this bundle only, offline (``zoo_source ngc`` keeps
    MONAI Label from downloading the model-zoo list at start; ``sam2 false`` skips the optional SAM2 model)."""
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
        "models",
        name,
        "--conf",
        "zoo_source",
        "ngc",
        "--conf",
        "sam2",
        "false",
        "--conf",
        "preload",
        "false",
        "--host",
        host,
        "--port",
        str(port),
    ]


def convert_studies(source: str | Path, target: str | Path, overwrite: bool = False) -> list[Path]:
    """Copy the photographs of ``source`` into ``target`` as files MONAI Label's datastore lists: GIF, PPM, TIFF
    and BMP become RGB PNG, PNG and JPEG are copied. Existing files are kept unless ``overwrite``."""
    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise FileNotFoundError(f"study folder {source} does not exist")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.iterdir()):
        suffix = path.suffix.lower()
        if not path.is_file() or suffix not in CONVERTED_SUFFIXES + DATASTORE_SUFFIXES:
            continue
        out = target / (path.name.split(".")[0] + (".png" if suffix in CONVERTED_SUFFIXES else suffix))
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        if suffix in CONVERTED_SUFFIXES:
            with Image.open(path) as image:
                image.convert("RGB").save(out)
        else:
            shutil.copy2(path, out)
        written.append(out)
    if not written:
        raise FileNotFoundError(f"no photographs in {source}")
    return written


class RequireImaged(MapTransform):
    """First step of the bundle's ``preprocessing``: an image that does not exist (an unknown image id in MONAI
    Label) is refused with HTTP 404 and one that is not a readable image with HTTP 415, instead of MONAI Label's
    generic 500. MONAI Label calls the transforms directly, so FastAPI's HTTPException reaches the client; where
    FastAPI is not installed (batch inference, which checks its files first) the error is an InputError."""

    def __init__(self, keys: KeysCollection = "image") -> None:
        super().__init__(keys)

    @staticmethod
    def _refuse(status: int, message: str) -> Exception:
        try:
            from fastapi import HTTPException  # only in MONAI Label's environment
        except ImportError:
            return InputError(message)
        return HTTPException(status_code=status, detail=message)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if not isinstance(value, (str, Path)):
                continue
            if not str(value) or not Path(value).is_file():
                raise self._refuse(404, f"image not found: '{value}' is not in the datastore")
            try:
                with Image.open(value) as image:
                    image.verify()
            except Exception as err:
                raise self._refuse(415, f"{Path(value).name} is not a readable image ({err})") from err
        return d
