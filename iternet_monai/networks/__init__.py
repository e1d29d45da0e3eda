"""Networks: IterNet and its registry of refinery modules."""

from .iternet import REFINERIES, IterNet, MiniUNet, register_refinery

__all__ = ["IterNet", "MiniUNet", "REFINERIES", "register_refinery"]
