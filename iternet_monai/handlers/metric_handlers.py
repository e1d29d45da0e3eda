"""Ignite handlers: thin wrappers of :mod:`iternet_monai.metrics` (as ``monai.handlers.ROCAUC`` wraps its metric),
learning-rate logging to TensorBoard and the loss of a trainer's output. Training progress, checkpoints and
validation during training: :mod:`iternet_monai.engines.training`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import IgniteMetricHandler
from torch.optim import Optimizer
from torch.utils.tensorboard import SummaryWriter

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
    "LearningRateLogger",
    "ValidationImages",
    "engine_loss",
    "every_n_steps",
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


class LearningRateLogger:
    """Writes the optimizer's learning rate to TensorBoard every epoch (MONAI logs it only through a scheduler)."""

    def __init__(self, optimizer: Optimizer, summary_writer: SummaryWriter, tag: str = "learning_rate") -> None:
        self.optimizer, self.writer, self.tag = optimizer, summary_writer, tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.writer.add_scalar(self.tag, self.optimizer.param_groups[0]["lr"], engine.state.epoch)
        self.writer.flush()


class ValidationImages:
    """After every validation, the first validation image's photograph, label and predicted vessel probability in
    TensorBoard, in the photograph's orientation (MONAI's arrays are (W, H)) and under tags that say what they are.
    Ours: MONAI's ``TensorBoardImageHandler`` writes the arrays as stored, transposed, as ``input_0_CHW``, ...."""

    def __init__(self, summary_writer: SummaryWriter, tag: str = "validation") -> None:
        self.writer, self.tag = summary_writer, tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.iteration != 1:
            return
        batch, output = engine.state.batch, engine.state.output
        item = batch[0] if isinstance(batch, list) else {k: v[0] for k, v in batch.items() if hasattr(v, "shape")}
        pred = (output[0] if isinstance(output, list) else {"pred": output["pred"][0]})["pred"]
        images = {"photograph": item["image"], "label": item.get("label"), "vessel_probability": pred}
        for name, image in images.items():
            if image is not None:
                photo_orientation = torch.as_tensor(image).detach().float().cpu().transpose(-1, -2)
                self.writer.add_image(f"{self.tag}/{name}", photo_orientation.clamp(0, 1), engine.state.epoch)
        self.writer.flush()


def every_n_steps(n: int) -> Callable[[Engine, int], bool]:
    """An ``iteration_log`` event filter for MONAI's stats handlers: every ``n``-th step and the last of each epoch,
    so that logging the loss (a GPU sync) does not hold up every step, and short runs still log."""

    def log_now(engine: Engine, iteration: int) -> bool:
        return iteration % n == 0 or iteration % engine.state.epoch_length == 0

    return log_now


def engine_loss(output: dict | list) -> float:
    """The loss of a trainer's output, decollated (a list of dicts) or not, detached from the graph."""
    loss = (output[0] if isinstance(output, list) else output)["loss"]
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
