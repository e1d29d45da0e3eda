"""Ignite handlers: thin wrappers of :mod:`iternet_monai.metrics`, and learning-rate logging to TensorBoard."""

from __future__ import annotations

from collections.abc import Callable

from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.handlers import IgniteMetricHandler
from torch.optim import Optimizer
from torch.utils.tensorboard import SummaryWriter

from .metrics import PixelAUCMetric, ThresholdMetric

__all__ = ["PixelAUC", "VesselThresholdMetric", "LearningRateLogger", "TrainingProgressBar", "engine_loss"]


def _identity(x: object) -> object:
    return x


class PixelAUC(IgniteMetricHandler):
    """Pooled ROC AUC of FoV pixels (see :class:`~iternet_monai.metrics.PixelAUCMetric`)."""

    def __init__(self, output_transform: Callable = _identity) -> None:
        super().__init__(metric_fn=PixelAUCMetric(), output_transform=output_transform, save_details=False)


class VesselThresholdMetric(IgniteMetricHandler):
    """F1, Se, Sp, Acc, precision or IoU at a threshold (see :class:`~iternet_monai.metrics.ThresholdMetric`)."""

    def __init__(
        self,
        metric_name: str = "f1",
        threshold: float = 0.5,
        pooled: bool = True,
        output_transform: Callable = _identity,
    ) -> None:
        super().__init__(
            metric_fn=ThresholdMetric(metric_name, threshold, pooled),
            output_transform=output_transform,
            save_details=False,
        )


class LearningRateLogger:
    """Writes the optimizer's learning rate to TensorBoard every epoch (MONAI logs it only through a scheduler)."""

    def __init__(self, optimizer: Optimizer, summary_writer: SummaryWriter, tag: str = "learning_rate") -> None:
        self.optimizer, self.writer, self.tag = optimizer, summary_writer, tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.writer.add_scalar(self.tag, self.optimizer.param_groups[0]["lr"], engine.state.epoch)
        self.writer.flush()


class TrainingProgressBar(ProgressBar):
    """Ignite's tqdm progress bar over each epoch's steps, showing the loss; attaches like a MONAI handler."""

    def attach(self, engine: Engine) -> None:  # type: ignore[override]
        super().attach(engine, output_transform=lambda output: {"loss": engine_loss(output)})


def engine_loss(output: dict | list) -> float:
    """The loss of a trainer's output, decollated (a list of dicts) or not."""
    return float((output[0] if isinstance(output, list) else output)["loss"])
