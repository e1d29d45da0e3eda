"""IterNet retinal vessel segmentation on MONAI.

Submodules are imported when first used (``iternet_monai.data``, ...), so the command line answers ``--help`` without
importing torch and MONAI.
"""

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = [
    "apps",
    "biomarkers",
    "data",
    "engines",
    "handlers",
    "inferers",
    "losses",
    "metrics",
    "networks",
    "transforms",
    "utils",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
