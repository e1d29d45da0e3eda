"""TensorBoard during training: the learning rate, and a validation image with its prediction."""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events
from torch.optim import Optimizer
from torch.utils.tensorboard import SummaryWriter

__all__ = ["LearningRateLogger", "ValidationImages"]


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
