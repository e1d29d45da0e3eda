"""Datalists: MONAI Decathlon-style JSON files with paths relative to a dataset folder, checked before use; the inputs
of a batch inference run; saved probability maps to score."""

from iternet_monai.data.datalist import (
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
from iternet_monai.data.inference_inputs import InferenceInputs, output_paths
from iternet_monai.data.maps import (
    PROBABILITY_SUFFIXES,
    EvaluationError,
    check_maps,
    is_binary_map,
    match_maps,
    read_probability_map,
)

__all__ = [
    "PROBABILITY_SUFFIXES",
    "EvaluationError",
    "read_probability_map",
    "is_binary_map",
    "match_maps",
    "check_maps",
    "BUILTIN_DATALISTS",
    "DatalistError",
    "builtin_datalist",
    "bundle_datalist",
    "check_files",
    "load_datalist",
    "make_datalist",
    "embedded_sample",
    "inference_items",
    "output_paths",
    "InferenceInputs",
]
