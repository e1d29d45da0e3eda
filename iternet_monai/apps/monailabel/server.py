"""Helpers to serve the bundle with MONAI Label: set up the app (:mod:`iternet_monai.apps.monailabel.app`), the command
that starts it, and photographs converted for its datastore. MONAI Label
itself lives in its own environment (``tox -e monailabel``); these helpers only copy files and name commands."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PIL import Image

from iternet_monai.utils.errors import InputError
from iternet_monai.utils.files import PHOTO_SUFFIXES, atomic_path, atomic_write_text, file_suffix, unique_names

__all__ = [
    "DATASTORE_SUFFIXES",
    "COPIED_SUFFIXES",
    "setup_app",
    "convert_studies",
    "server_command",
]

# What MONAI Label 0.8.5's LocalDatastore lists (MONAI_LABEL_DATASTORE_FILE_EXT; .tif is read as pathology there),
# and what convert-studies copies unchanged: every other photograph becomes RGB PNG, and .jpeg is copied as .jpg.
DATASTORE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".jpg", ".png", ".tif", ".svs", ".xml")
COPIED_SUFFIXES = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}


APP_MAIN = '''"""MONAI Label app of the IterNet bundle in model/iternet (written by iternet-monai label-app)."""

from iternet_monai.apps.monailabel.app import IterNetApp  # noqa: F401 - MONAI Label loads the MONAILabelApp subclass
'''


def setup_app(app_dir: str | Path, bundle: str | Path) -> Path:
    """Make ``app_dir`` a MONAI Label app serving a copy of ``bundle`` (:mod:`iternet_monai.apps.monailabel.app`):
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
    (:func:`~iternet_monai.utils.files.unique_names`) and written atomically. Nothing is written when a target file
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
