"""IterNet retinal vessel segmentation on MONAI."""

from . import data, handlers, inference, losses, metrics, networks, transforms

__version__ = "0.1.0"
__all__ = ["data", "handlers", "inference", "losses", "metrics", "networks", "transforms", "__version__"]
