"""The batch inference's measurements: vessel biomarkers and image quality of every segmented image."""

from __future__ import annotations

import logging
from pathlib import Path

from ignite.engine import Engine, Events

from iternet_monai.handlers.vessel_map_writer import vessel_maps, writes_outputs
from iternet_monai.utils.errors import flag

__all__ = ["BiomarkerWriter"]

logger = logging.getLogger(__name__)


class BiomarkerWriter:
    """Ignite handler that measures the vessel biomarkers and quality of every mask an evaluator has segmented and
    writes them when the run completes (:mod:`iternet_monai.biomarkers.measure`: ``biomarkers.csv``,
    ``segments.csv``, ``quality.csv``, ``columns.json``, ``cohort.png`` and ``figures/<name>.png``). The bundle's
    ``--measure true`` is whether it is in the evaluator's handlers. Tables of an earlier run in ``output_dir`` are
    refused before any work unless ``overwrite``; an untrained network is not measured unless ``allow_untrained``.

    Args:
        output_dir: the folder written to.
        weights: the weights the network runs (None: untrained).
        allow_untrained: measure the outputs of an untrained network.
        mm_per_pixel: the photographs' scale; None gives lengths in pixels.
        overwrite: replace the tables of an earlier run.
    """

    def __init__(
        self,
        output_dir: str | Path,
        weights: str | None = None,
        allow_untrained: bool = False,
        mm_per_pixel: float | None = None,
        overwrite: bool = False,
    ) -> None:
        self.output_dir, self.mm_per_pixel = Path(output_dir), mm_per_pixel
        self.write, self.overwrite = writes_outputs(weights, allow_untrained), flag(overwrite, "overwrite")
        self.measured: list = []

    def attach(self, engine: Engine) -> None:
        if not self.write:
            return
        from iternet_monai.biomarkers.measure import check_outputs

        names = [item["name"] for item in engine.data_loader.dataset.data]
        check_outputs(self.output_dir, names, self.overwrite)  # refuse before any work
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.summary)

    def __call__(self, engine: Engine) -> None:
        from iternet_monai.biomarkers.measure import figure_path, measure_image

        for item, output in zip(engine.state.batch, engine.state.output):
            maps = vessel_maps(output)
            figure = figure_path(self.output_dir, item["name"])
            self.measured.append(
                measure_image(
                    item["name"],
                    maps.mask,
                    photo=maps.photo,
                    probability=maps.probability,
                    mm_per_pixel=self.mm_per_pixel,
                    figure=figure,
                )
            )

    def summary(self, engine: Engine) -> None:
        if self.measured:
            from iternet_monai.biomarkers.measure import write_results

            write_results(self.measured, self.output_dir, self.mm_per_pixel)
            logger.info(f"wrote the biomarkers and quality of {len(self.measured)} image(s) to {self.output_dir}")
