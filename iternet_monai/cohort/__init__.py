"""Segment, check and measure a whole cohort of fundus photographs, resumably: on Ray (the ``cohort`` extra), or
one ``--shard`` at a time without it. Ray is imported by :mod:`.ray_run` only, when a run needs it."""

from iternet_monai.cohort.manifest import CohortItem, cohort_items, read_manifest, shard_of
from iternet_monai.cohort.progress import Progress
from iternet_monai.cohort.run import CohortOptions, local_rows, run_cohort
from iternet_monai.cohort.store import CohortFolder
from iternet_monai.cohort.tables import CohortCounts, gather
from iternet_monai.cohort.work import CohortSettings, Segmenter, finish, prepare, preprocessing

__all__ = [
    "CohortItem",
    "read_manifest",
    "cohort_items",
    "shard_of",
    "Progress",
    "CohortFolder",
    "CohortCounts",
    "gather",
    "CohortSettings",
    "preprocessing",
    "prepare",
    "Segmenter",
    "finish",
    "CohortOptions",
    "local_rows",
    "run_cohort",
]
