"""Evaluation is the bundle's inference pipeline with evaluation's additions: ``inference.json`` (preprocessing ->
inferer -> postprocessing, run by MONAI's ``SupervisedEvaluator``) with ``evaluate.json`` merged over it, which loads
image, label and FoV from a datalist, takes the probabilities after postprocessing (no sigmoid for saved maps, read
by :class:`~iternet_monai.inferers.StoredMapInferer`) and scores them with
:class:`~iternet_monai.handlers.ProtocolReport`. ``iternet-monai evaluate`` and
``python -m monai.bundle run evaluating`` both run that one config; :func:`run_evaluation` is the same for scripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.inferers import Inferer

from iternet_monai.data import load_datalist
from iternet_monai.data.maps import EvaluationError
from iternet_monai.engines.inference import run_evaluator
from iternet_monai.inferers import StoredMapInferer, resolve_backend, resolve_mode
from iternet_monai.utils.errors import find_input_error, flag, optional
from iternet_monai.utils.files import BUNDLE_DIR

__all__ = [
    "EVALUATION_CONFIGS",
    "evaluation_items",
    "prediction_source",
    "evaluation_parser",
    "run_evaluation",
]

# The configs of an evaluation, merged in this order (the bundle's own files).
EVALUATION_CONFIGS = tuple(str(BUNDLE_DIR / "configs" / name) for name in ("inference.json", "evaluate.json"))


def evaluation_items(
    datalist: str | Path, dataset_dir: str | Path | None, data_key: str = "testing", use_fov: bool = True
) -> list[dict]:
    """The datalist's ``data_key`` items to evaluate, every file checked first
    (:func:`~iternet_monai.data.load_datalist`) and every item labelled; FoV masks are left out without ``use_fov``.

    Args:
        datalist: a datalist JSON or a built-in datalist's name.
        dataset_dir: the folder the datalist's paths are relative to.
        data_key: the datalist's list to evaluate.
        use_fov: keep the items' FoV masks (else the whole image is scored).
    """
    items = load_datalist(datalist, dataset_dir, data_key, check=True)
    unlabelled = [item["image"] for item in items if "label" not in item]
    if unlabelled:
        raise EvaluationError("the datalist gives no label to evaluate against for:\n  " + "\n  ".join(unlabelled))
    keys = ("image", "label", "mask") if flag(use_fov, "use_fov") else ("image", "label")
    return [{k: item[k] for k in keys if k in item} for item in items]


def prediction_source(
    inferer: Inferer,
    checkpoint: str | Path | None,
    device: torch.device | str,
    mode: str = "auto",
    tta: bool = False,
    backend: str = "auto",
    allow_untrained: bool = False,
) -> dict:
    """What the predictions are, for ``metrics.json``: the maps read (a :class:`StoredMapInferer`), or the model's
    checkpoint, device, the inference mode and backend that run and, for the sliding window, its ROI size, overlap
    and blending. A model without weights is refused unless ``allow_untrained``.

    Args:
        inferer: the evaluator's inferer.
        checkpoint: the weights the network was built from (None: untrained).
        device: the evaluator's device.
        mode, tta, backend: the inference options as configured (``auto`` is resolved here).
        allow_untrained: score an untrained network (to check the pipeline).
    """
    if isinstance(inferer, StoredMapInferer):
        return dict(inferer.description)
    checkpoint = optional(checkpoint)
    if checkpoint is None and not flag(allow_untrained, "allow_untrained"):
        raise EvaluationError(
            "no weights to evaluate: the bundle has no models/model.pt; give a model.pt (iternet-monai evaluate "
            "--ckpt PATH, or --ckpt_path PATH) or a folder of saved maps (--predictions)"
        )
    device = torch.device(device)
    source: dict[str, Any] = {"checkpoint": None if checkpoint is None else str(checkpoint), "device": str(device)}
    source.update(mode=resolve_mode(mode, device), tta=flag(tta, "tta"), backend=resolve_backend(backend, device))
    windows = getattr(inferer, "inferer", inferer)  # the sliding window inside flip averaging
    if source["mode"] == "sliding_window":
        source.update(roi_size=list(windows.roi_size), overlap=windows.overlap, blend=windows.mode)
    return source


def evaluation_parser(config_files: Sequence[str | Path] = EVALUATION_CONFIGS, **overrides: Any) -> ConfigParser:
    """The evaluation's config: ``config_files`` (the bundle's ``inference.json`` and ``evaluate.json``) merged in
    order as ``python -m monai.bundle run`` merges them, with ``overrides`` (config ids: ``dataset_dir``,
    ``predictions``, ``ckpt_path``, ``use_fov``, ...) set on top.

    Args:
        config_files: the config files, later ones overriding earlier ones.
        overrides: config ids and their values.
    """
    parser = ConfigParser()
    parser.read_config([str(path) for path in config_files])
    parser.update(overrides)
    return parser


def run_evaluation(
    datalist: str | Path,
    dataset_dir: str | Path,
    output_dir: str | Path = "evaluation",
    predictions: str | Path | None = None,
    **overrides: Any,
) -> dict:
    """Evaluate a model or saved maps on a datalist's test list as ``iternet-monai evaluate`` does, writing the
    evaluation's files to ``output_dir``; returns the content of its ``metrics.json``.

    Args:
        datalist: a datalist JSON or a built-in datalist's name.
        dataset_dir: the folder the datalist's paths are relative to.
        output_dir: the evaluation's folder.
        predictions: a folder of saved maps to score instead of running the network.
        overrides: other config ids of ``evaluate.json`` and ``inference.json``: ``ckpt_path`` (default: the
            bundle's weights), ``data_key``, ``use_fov``, ``threshold``, ``gt_roundtrip``, ``connectivity``,
            ``overwrite``, ``mode``, ``device``, ``sw_overlap``, ...

    Raises:
        InputError: a bad input (datalist, map, weights, output folder), its message naming the file or key.
    """
    settings = {"datalist": str(datalist), "dataset_dir": str(dataset_dir), "output_dir": str(output_dir)}
    parser = evaluation_parser(**settings, predictions=None if predictions is None else str(predictions), **overrides)
    try:
        run_evaluator(parser.get_parsed_content("evaluator"))
    except Exception as err:
        found = find_input_error(err)  # MONAI wraps an error raised while it builds a config item
        if found is None:
            raise
        raise found from None
    return parser.get_parsed_content("report").content
