"""A progress bar of the images a batch inference run has segmented."""

from __future__ import annotations

from ignite.engine import Engine, Events
from tqdm import tqdm

__all__ = ["ImageProgress"]


class ImageProgress:
    """Ignite handler: a bar of the images segmented out of the run's total, drawn at 0 when the run starts,
    advanced as each image's outputs are written (attach it after the writers) and closed when the last one is.
    Ours: ignite's ``ProgressBar`` is first drawn when the first image is done, already at 1.

    Args:
        desc: the bar's label.
    """

    def __init__(self, desc: str = "segmenting") -> None:
        self.desc = desc
        self.bar: tqdm | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.open)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.advance)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.close)

    def open(self, engine: Engine) -> None:
        self.bar = tqdm(total=len(engine.data_loader.dataset), desc=self.desc, unit="image")

    def advance(self, engine: Engine) -> None:
        if self.bar is not None:
            self.bar.update(len(engine.state.batch))

    def close(self, engine: Engine) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
