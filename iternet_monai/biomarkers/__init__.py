"""Vessel biomarkers of a binary vessel map, photograph quality control and the measure API."""

from iternet_monai.biomarkers.measure import (
    TABLES,
    ImageResult,
    check_outputs,
    figure_path,
    measure_folders,
    measure_image,
    parse_rules,
    write_results,
)
from iternet_monai.biomarkers.measures import (
    CENTRELINE_SIGMA,
    IMAGE_COLUMNS,
    SEGMENT_COLUMNS,
    VesselMeasures,
    box_counting_dimension,
    measure_vessels,
)
from iternet_monai.biomarkers.quality import (
    DEFAULT_RULES,
    QUALITY_COLUMNS,
    QualityRule,
    photograph_fov,
    quality_flags,
    quality_measures,
)

__all__ = [
    "CENTRELINE_SIGMA",
    "IMAGE_COLUMNS",
    "SEGMENT_COLUMNS",
    "VesselMeasures",
    "box_counting_dimension",
    "measure_vessels",
    "QUALITY_COLUMNS",
    "QualityRule",
    "DEFAULT_RULES",
    "photograph_fov",
    "quality_measures",
    "quality_flags",
    "TABLES",
    "ImageResult",
    "check_outputs",
    "figure_path",
    "measure_image",
    "write_results",
    "parse_rules",
    "measure_folders",
]
