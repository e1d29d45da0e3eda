"""Vessel biomarkers of a binary vessel map, photograph quality control and the measure API."""

from iternet_monai.biomarkers.figures import figure_path, save_cohort_figure, save_vessel_figure
from iternet_monai.biomarkers.measure import measure_folders, measure_image, parse_rules
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
from iternet_monai.biomarkers.tables import TABLES, ImageResult, check_outputs, write_results

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
    "save_vessel_figure",
    "save_cohort_figure",
    "measure_image",
    "write_results",
    "parse_rules",
    "measure_folders",
]
