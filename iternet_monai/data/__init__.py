"""Datalists: MONAI Decathlon-style JSON files with paths relative to a dataset folder, checked before use."""

from .datalist import (
    BUILTIN_DATALISTS,
    DatalistError,
    builtin_datalist,
    bundle_datalist,
    check_files,
    embedded_sample,
    inference_items,
    load_datalist,
    make_datalist,
)

__all__ = [
    "BUILTIN_DATALISTS",
    "DatalistError",
    "builtin_datalist",
    "bundle_datalist",
    "check_files",
    "load_datalist",
    "make_datalist",
    "embedded_sample",
    "inference_items",
]
