"""Ignite handlers: thin wrappers of :mod:`iternet_monai.metrics` (as ``monai.handlers.ROCAUC`` wraps its metric)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ignite.engine import Engine
from monai.handlers import IgniteMetricHandler

from iternet_monai.metrics import (
    Betti0ErrorMetric,
    CALMetric,
    ClDiceMetric,
    ConnectivityMetric,
    PixelAUCMetric,
    ThresholdMetric,
    protocol_metrics,
)

__all__ = [
    "VesselMetricHandler",
    "PixelAUC",
    "VesselThresholdMetric",
    "Connectivity",
    "ClDice",
    "Betti0Error",
    "CAL",
    "protocol_handlers",
]


def _identity(x: Any) -> Any:
    return x


class VesselMetricHandler(IgniteMetricHandler):
    """An ``IgniteMetricHandler`` whose per-image details (``engine.state.metric_details[name]``, written by
    ``MetricsSaver``) are the metric's per-image values rather than its raw buffers."""

    def __init__(self, metric_fn: Any, output_transform: Callable = _identity, save_details: bool = True) -> None:
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=False)
        self.save_per_image = save_details

    def attach(self, engine: Engine, name: str) -> None:  # type: ignore[override]
        super().attach(engine, name)
        if self.save_per_image and not hasattr(engine.state, "metric_details"):
            engine.state.metric_details = {}  # type: ignore[attr-defined]

    def compute(self) -> Any:
        result = super().compute()
        if self.save_per_image and self._engine is not None:
            self._engine.state.metric_details[self._name] = self.metric_fn.per_image()  # type: ignore[attr-defined]
        return result


class PixelAUC(VesselMetricHandler):
    """ROC or PR AUC of FoV pixels, pooled or per image (:class:`~iternet_monai.metrics.PixelAUCMetric`)."""

    def __init__(
        self, curve: str = "roc", pooled: bool = True, output_transform: Callable = _identity, save_details: bool = True
    ) -> None:
        super().__init__(PixelAUCMetric(curve, pooled), output_transform, save_details)


class VesselThresholdMetric(VesselMetricHandler):
    """F1, Se, Sp, Acc, precision or IoU at a threshold (:class:`~iternet_monai.metrics.ThresholdMetric`)."""

    def __init__(
        self,
        metric_name: str = "f1",
        threshold: float = 0.5,
        pooled: bool = True,
        output_transform: Callable = _identity,
        save_details: bool = True,
    ) -> None:
        super().__init__(ThresholdMetric(metric_name, threshold, pooled), output_transform, save_details)


class Connectivity(VesselMetricHandler):
    """IterNet's connectivity, paper eq. 3 (:class:`~iternet_monai.metrics.ConnectivityMetric`)."""

    def __init__(
        self,
        alpha: float = 0.05,
        connectivity: int = 2,
        output_transform: Callable = _identity,
        save_details: bool = True,
    ) -> None:
        super().__init__(ConnectivityMetric(alpha, connectivity), output_transform, save_details)


class ClDice(VesselMetricHandler):
    """clDice at a threshold (:class:`~iternet_monai.metrics.ClDiceMetric`)."""

    def __init__(self, threshold: float = 0.5, output_transform: Callable = _identity, save_details: bool = True):
        super().__init__(ClDiceMetric(threshold), output_transform, save_details)


class Betti0Error(VesselMetricHandler):
    """Component-count error at a threshold (:class:`~iternet_monai.metrics.Betti0ErrorMetric`)."""

    def __init__(
        self,
        threshold: float = 0.5,
        connectivity: int = 2,
        output_transform: Callable = _identity,
        save_details: bool = True,
    ) -> None:
        super().__init__(Betti0ErrorMetric(threshold, connectivity), output_transform, save_details)


class CAL(VesselMetricHandler):
    """CAL of Gegúndez-Arias et al. or one of its factors C, A, L (:class:`~iternet_monai.metrics.CALMetric`)."""

    def __init__(
        self,
        component: str = "cal",
        threshold: float = 0.5,
        alpha: int = 2,
        beta: int = 2,
        connectivity: int = 2,
        output_transform: Callable = _identity,
        save_details: bool = True,
    ) -> None:
        super().__init__(CALMetric(component, threshold, alpha, beta, connectivity), output_transform, save_details)


def protocol_handlers(
    output_transform: Callable = _identity, threshold: float = 0.5, connectivity: int = 2
) -> dict[str, VesselMetricHandler]:
    """One metric handler per metric of the evaluation protocol (:func:`~iternet_monai.metrics.protocol_metrics`),
    by name, for an evaluator's ``additional_metrics`` (e.g. a training's validation); an evaluation's report is
    :class:`~iternet_monai.handlers.ProtocolReport`, from the same definitions."""
    metrics = protocol_metrics(threshold, connectivity)
    return {name: VesselMetricHandler(metric, output_transform) for name, metric in metrics.items()}
