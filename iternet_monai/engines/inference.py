"""Batch inference the model-zoo way: ``inference.json`` wires preprocessing -> inferer -> postprocessing -> handlers
(weights loader, writers, progress) into MONAI's ``SupervisedEvaluator``. This module runs it (:func:`segment`) and
parses it for evaluation and the benchmarks (:func:`load_pipeline`); the run's inputs are
:class:`iternet_monai.data.InferenceInputs`, its handlers are in :mod:`iternet_monai.handlers`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ignite.engine import Engine
from monai.bundle import ConfigParser

from iternet_monai.data.inference_inputs import InferenceInputs
from iternet_monai.utils.files import BUNDLE_DIR

__all__ = ["run_evaluator", "segment", "load_pipeline"]

logger = logging.getLogger(__name__)


def run_evaluator(evaluator: Engine) -> None:
    """Run an inference or evaluation evaluator with ignite's notes on starting, finishing an epoch and finishing
    the run left out (they say nothing to a user, whose progress bar and written-outputs line or report say what was
    done). The logger's level is restored after the run: it is shared by every evaluator of the process, a
    training's validation included."""
    level = evaluator.logger.level
    evaluator.logger.setLevel(logging.WARNING)
    try:
        evaluator.run()
    finally:
        evaluator.logger.setLevel(level)


def segment(evaluator: Engine, inputs: InferenceInputs) -> None:
    """Run the inference evaluator over ``inputs`` (if any are left) quietly (:func:`run_evaluator`), then report
    bad inputs.

    Args:
        evaluator: the bundle's ``evaluator``.
        inputs: the bundle's ``inputs``, whose items the evaluator's data loader holds.
    """
    if inputs.items:
        run_evaluator(evaluator)
    else:
        logger.info("nothing to segment")
    inputs.report()


def load_pipeline(config_file: str | Path | None = None, **overrides: Any) -> ConfigParser:
    """The bundle's ``inference.json`` parsed with ``overrides`` (``ckpt_path``, ``mode``, ``device``, ...): the one
    pipeline whose ``network``, ``inferer`` and ``postprocessing`` evaluation and the benchmarks use. Its
    ``weights_loader`` has loaded the weights into the network (the bundle's run loads them when its evaluator
    starts), so ``network`` runs them whatever the backend.

    Args:
        config_file: an inference config; the bundle's ``configs/inference.json`` by default.
        overrides: config ids and their values.
    """
    parser = ConfigParser()
    parser.read_config(str(config_file or BUNDLE_DIR / "configs" / "inference.json"))
    parser.update(overrides)
    parser.parse()
    parser.get_parsed_content("weights_loader").load()
    return parser
