"""The first step of every pipeline: a request that cannot be served is refused before any work."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image

from iternet_monai.data import check_files
from iternet_monai.utils.errors import InputError

__all__ = ["RequirePhotod"]


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
