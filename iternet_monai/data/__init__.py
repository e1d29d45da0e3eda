"""Datalists: MONAI Decathlon-style JSON files with paths relative to a dataset folder, checked before use; the inputs
of a batch inference run; vessel maps written and read (saved probability maps to score); a photograph's field of
view. NumPy and PIL only: nothing here imports PyTorch or MONAI."""

from iternet_monai.data.datalist import (
    BUILTIN_DATALISTS,
    DatalistError,
    builtin_datalist,
    bundle_datalist,
    check_files,
    embedded_sample,
    image_files,
    inference_items,
    load_datalist,
)
from iternet_monai.data.field_of_view import derive_field_of_view
from iternet_monai.data.inference_inputs import InferenceInputs, output_paths
from iternet_monai.data.make_datalist import make_datalist
from iternet_monai.data.maps import (
    PROBABILITY_SUFFIXES,
    EvaluationError,
    VesselMaps,
    check_maps,
    files_by_image,
    is_binary_map,
    match_maps,
    overlay,
    pair_by_stem,
    read_probability_map,
    save_vessel_maps,
)

__all__ = [
    "PROBABILITY_SUFFIXES",
    "EvaluationError",
    "read_probability_map",
    "is_binary_map",
    "match_maps",
    "check_maps",
    "pair_by_stem",
    "files_by_image",
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
    "image_files",
    "derive_field_of_view",
    "VesselMaps",
    "overlay",
    "save_vessel_maps",
]
