"""MONAI Label: the app serving the bundle (``app``) and its setup helpers (``server``)."""

from iternet_monai.apps.monailabel.server import (
    COPIED_SUFFIXES,
    DATASTORE_SUFFIXES,
    convert_studies,
    server_command,
    setup_app,
)

__all__ = [
    "DATASTORE_SUFFIXES",
    "COPIED_SUFFIXES",
    "setup_app",
    "convert_studies",
    "server_command",
]
