"""Fundus-specific transforms: loading, field of view, label values, augmentation."""

from iternet_monai.transforms.field_of_view import FieldOfViewd
from iternet_monai.transforms.fundus import (
    CheckFundusd,
    DropSingletonDepthd,
    GroundTruthRoundTripd,
    LabelValuesd,
    LoadFundusd,
    LoadLabelsd,
    RandSaturationd,
    fundus_loading,
    label_values,
    source_name,
    to_gray,
    to_rgb,
)
from iternet_monai.transforms.photo import RequirePhotod

__all__ = [
    "RequirePhotod",
    "to_rgb",
    "to_gray",
    "source_name",
    "CheckFundusd",
    "label_values",
    "LabelValuesd",
    "DropSingletonDepthd",
    "LoadLabelsd",
    "FieldOfViewd",
    "RandSaturationd",
    "LoadFundusd",
    "fundus_loading",
    "GroundTruthRoundTripd",
]
