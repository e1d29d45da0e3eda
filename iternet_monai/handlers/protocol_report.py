"""The evaluation protocol's report as an ignite handler: it collects every image's probability, label and FoV from
an evaluator, feeds the protocol metrics (:func:`iternet_monai.metrics.protocol_metrics`) and, when the run is
complete, writes ``metrics.json``, ``per_image.csv``, ROC and PR curves and ``overlays/<stem>.png``.

Nothing is written until every image is scored, then ``metrics.json`` last, so a folder with a ``metrics.json`` is a
complete evaluation. ``metrics.json`` holds the rules, the confusion counts and pixel totals pooled and per image,
and where each FoV came from, so that anyone can recompute the numbers (docs/evaluation.md describes its fields).
Ours: MONAI's ``MetricsSaver`` writes CSV summaries of ignite metrics, not a self-describing protocol record.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from iternet_monai.data.maps import EvaluationError
from iternet_monai.handlers.report_files import overlay_png, summary_table, write_report
from iternet_monai.metrics import POOLED_METRICS, ThresholdMetric, protocol_metrics, protocol_rules
from iternet_monai.transforms.fundus import source_name
from iternet_monai.utils.errors import InputError, flag, optional
from iternet_monai.utils.files import check_evaluation_folder, file_stem

__all__ = ["ProtocolReport", "nan_reason"]

logger = logging.getLogger(__name__)


def nan_reason(name: str, counts: Mapping[str, int]) -> str:
    """Why metric ``name`` is NaN for confusion ``counts`` (keys ``tp``, ``fp``, ``fn``, ``tn``).

    Args:
        name: the metric's report name.
        counts: the confusion counts of the pixels it was computed on.
    """
    tp, fp, fn, tn = (counts[k] for k in ("tp", "fp", "fn", "tn"))
    if tp + fp + fn + tn == 0:
        return "no pixel in the region"
    if name in ("auc", "pr_auc"):
        return "the ground truth has one class only"
    if name == "specificity":
        return "no background pixel in the ground truth"
    if tp + fp == 0 and tp + fn == 0:
        return "empty prediction and empty ground truth"
    if tp + fp == 0:
        return "no positive prediction"
    if tp + fn == 0:
        return "no vessel pixel in the ground truth"
    return "undefined for this image"


def _counts(row: torch.Tensor) -> dict:
    """Named counts of one ``[TP, FP, TN, FN]`` row (MONAI's order), with the FoV and vessel pixel totals."""
    tp, fp, tn, fn = (int(v) for v in row.tolist())
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "fov_pixels": tp + fp + fn + tn, "vessel_pixels": tp + fn}


def _every_image_reason(name: str, rows: list[dict]) -> str:
    """Why a per-image metric is NaN in every image: the images' own reasons, once each."""
    reasons = dict.fromkeys(row.get("nan_reasons", {}).get(name, "undefined") for row in rows)
    return f"NaN in every image ({'; '.join(reasons)})"


def _region(use_fov: bool, sources: list[str]) -> str:
    if not use_fov:
        return "whole image"
    derived = sum(source.startswith("derived") for source in sources)
    return (
        f"field of view: dataset masks for {len(sources) - derived} image(s), derived from the image for {derived} "
        "(per_image fov_source says how)"
    )


class ProtocolReport:
    """Ignite handler that scores every image an evaluator has run under the protocol and writes the evaluation's
    files when the run completes (:func:`~iternet_monai.handlers.report_files.write_report`); :attr:`content` then
    holds what ``metrics.json`` holds. The output folder is checked when the handler is made: one holding an earlier
    evaluation is refused unless ``overwrite``.

    Args:
        output_dir: the folder of ``metrics.json``, ``per_image.csv``, the curves and ``overlays/``.
        source: what the predictions are (the maps read, or the model and the inference that ran), for
            ``metrics.json``.
        use_fov: score the pixels inside the FoV mask (``mask``), else the whole image.
        threshold: binarisation ``prob >= threshold``.
        gt_roundtrip: the size of the label's round trip, if the preprocessing made one (recorded only).
        connectivity: 8 or 4: pixel connectivity of components.
        overwrite: replace an earlier evaluation in ``output_dir``.
        log_summary: log the console table when done.
        prob_key: the output key of the probabilities after postprocessing.
    """

    def __init__(
        self,
        output_dir: str | Path,
        source: str | dict = "",
        use_fov: bool = True,
        threshold: float = 0.5,
        gt_roundtrip: int | None = None,
        connectivity: int = 8,
        overwrite: bool = False,
        log_summary: bool = True,
        prob_key: str = "prob",
    ) -> None:
        self.output_dir = check_evaluation_folder(output_dir, flag(overwrite, "overwrite"))
        if int(connectivity) not in (4, 8):
            raise InputError(f"--connectivity {connectivity}: give 4 or 8")
        self.source, self.use_fov, self.threshold = source, flag(use_fov, "use_fov"), float(threshold)
        self.gt_roundtrip, self.connectivity = optional(gt_roundtrip), int(connectivity)
        self.log_summary, self.prob_key = flag(log_summary, "log_summary"), prob_key
        self.content: dict | None = None
        self.reset()

    def reset(self, engine: Engine | None = None) -> None:
        """Start a new evaluation: fresh metrics, nothing collected."""
        self.metrics = protocol_metrics(self.threshold, 1 if self.connectivity == 4 else 2)
        self.names: list[str] = []
        self.fov_sources: list[str] = []
        self.overlays: dict[str, bytes] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.complete)

    def collect(self, engine: Engine) -> None:
        for item, output in zip(engine.state.batch, engine.state.output):
            self.add(item, output)

    def add(self, item: Mapping[str, Any], output: Mapping[str, Any]) -> None:
        """Score one image: ``item`` holds its ``image``, ``label`` and (with ``use_fov``) ``mask``; ``output`` its
        probabilities under ``prob_key``, (1, W, H)."""
        name = source_name(item, "image")
        prob = torch.as_tensor(output[self.prob_key]).detach().float().cpu()[0]
        label = torch.as_tensor(item["label"]).detach().cpu()[0] > 0.5
        if prob.shape != label.shape:
            raise EvaluationError(
                f"{name}: the prediction is {prob.shape[1]}x{prob.shape[0]} (HxW) but the image is "
                f"{label.shape[1]}x{label.shape[0]}; nothing was written"
            )
        if not torch.isfinite(prob).all():
            raise EvaluationError(f"{name}: the prediction contains NaN or infinite values; nothing was written")
        fov = torch.as_tensor(item["mask"]).cpu()[0] > 0.5 if self.use_fov else torch.ones_like(label)
        y = torch.stack([label, fov]).float()[None]
        for metric in self.metrics.values():
            metric(y_pred=prob[None, None], y=y)
        self.names.append(file_stem(name))
        meta = getattr(item.get("mask"), "meta", {})
        self.fov_sources.append(meta.get("fov_source", "dataset mask") if self.use_fov else "none")
        self.overlays[self.names[-1]] = overlay_png(prob.numpy(), label.numpy(), fov.numpy(), self.threshold)

    def complete(self, engine: Engine | None = None) -> None:
        """Write the evaluation's files (``metrics.json`` last) and log the console table."""
        self.content = self.report()
        write_report(self.output_dir, self.content, self.overlays, self.metrics["auc"])  # type: ignore[arg-type]
        if self.log_summary:
            logger.info(summary_table(self.content))
            logger.info(f"wrote {self.output_dir}/metrics.json, per_image.csv, roc.png, pr.png and overlays/")

    def _rows(self, per_image: dict[str, list[float]], image_counts: list[dict]) -> list[dict]:
        rows = []
        for index, name in enumerate(self.names):
            values = {metric: per_image[metric][index] for metric in self.metrics}
            reasons = {k: nan_reason(k, image_counts[index]) for k, v in values.items() if np.isnan(v)}
            rows.append(
                {
                    "image": name,
                    **values,
                    **image_counts[index],
                    "fov_source": self.fov_sources[index],
                    **({"nan_reasons": reasons} if reasons else {}),
                }
            )
        return rows

    def report(self) -> dict:
        """What ``metrics.json`` holds, from the images collected so far."""
        if not self.names:
            raise EvaluationError("no image was evaluated; nothing was written")
        confusion: ThresholdMetric = self.metrics["f1"]  # type: ignore[assignment]
        image_counts = [_counts(row) for row in confusion.counts()]
        pooled_counts = _counts(confusion.counts().sum(0))
        pooled = {name: float(metric.aggregate()) for name, metric in self.metrics.items()}
        per_image = {name: metric.per_image()[:, 0].tolist() for name, metric in self.metrics.items()}
        with warnings.catch_warnings():  # all-NaN per-image values (e.g. F1 of empty maps) give NaN, as documented
            warnings.simplefilter("ignore", RuntimeWarning)
            summary = {
                name: {"mean": float(np.nanmean(values)), "sd": float(np.nanstd(values))}
                for name, values in per_image.items()
            }
        rows = self._rows(per_image, image_counts)
        roundtrip = self.gt_roundtrip
        return {
            "protocol": {
                "region": _region(self.use_fov, self.fov_sources),
                "ground_truth": f"label resized to {roundtrip}x{roundtrip} and back, > 0.5 (released code)"
                if roundtrip
                else "label file as given, > 0.5",
                **protocol_rules(self.metrics),
                "predictions": self.source,
                "images": len(self.names),
            },
            "pooled": pooled,
            "pooled_counts": pooled_counts,
            "nan_reasons": {
                name: nan_reason(name, pooled_counts) if name in POOLED_METRICS else _every_image_reason(name, rows)
                for name, value in pooled.items()
                if np.isnan(value)
            },
            "per_image_mean_sd": summary,
            "per_image": rows,
        }
