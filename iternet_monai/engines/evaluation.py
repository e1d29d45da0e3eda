"""Batch evaluation under one documented protocol (:mod:`iternet_monai.metrics.protocol`), of this project's models
or of any method's saved maps.

Every saved map is checked before scoring starts, and all bad ones are named in one message. Nothing is written
until every image is scored; then the overlays, ``per_image.csv`` and the curves are written (each atomically) and
``metrics.json`` last, so a folder with a ``metrics.json`` is a complete evaluation. ``metrics.json`` holds the
rules, the confusion counts and pixel totals pooled and per image, and where each FoV came from, so that anyone can
recompute the numbers; docs/evaluation.md describes its fields.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose
from PIL import Image
from sklearn.metrics import precision_recall_curve, roc_curve
from tqdm import tqdm

from iternet_monai.data.maps import EvaluationError, check_maps, read_probability_map
from iternet_monai.metrics import POOLED_METRICS, PixelAUCMetric, ThresholdMetric, protocol_metrics, protocol_rules
from iternet_monai.transforms.fundus import FieldOfViewd, GroundTruthRoundTripd, fundus_loading
from iternet_monai.utils.files import (
    atomic_path,
    atomic_write_json,
    check_evaluation_folder,
    file_stem,
    remove_leftovers,
)

__all__ = [
    "MapPredictor",
    "map_predictor",
    "model_predictor",
    "evaluate",
    "nan_reason",
    "summary_table",
]

logger = logging.getLogger(__name__)
COUNT_FIELDS = ("tp", "fp", "fn", "tn", "fov_pixels", "vessel_pixels")
BINARY_NOTE = (
    "AUC and PR AUC of a binary map are those of its one operating point (a two-step curve), not a ranking of "
    "vessel probabilities; compare them only with other binary maps"
)
# Overlay colours: true positive, false positive, false negative, outside the FoV.
TP_COLOUR, FP_COLOUR, FN_COLOUR, OUTSIDE_COLOUR = (255, 255, 255), (230, 40, 40), (40, 120, 255), (40, 40, 40)


Predictor = Callable[[dict], np.ndarray]


class MapPredictor:
    """Predictions read from saved maps, every one matched and checked first (:func:`check_maps`);
    returned in MONAI's (W, H) orientation. ``description`` says what was read, for ``metrics.json``."""

    def __init__(self, items: Sequence[dict], folder: str | Path) -> None:
        self.maps, self.binary = check_maps(items, folder)
        binary = [self.maps[image].name for image, flag in self.binary.items() if flag]
        if binary:
            logger.info(f"{len(binary)} binary map(s) (only 0 and 1, or 0 and 255), read as 0/1: {', '.join(binary)}")
            logger.info(f"note: {BINARY_NOTE}")
        self.description = {
            "maps": str(folder),
            "files": {file_stem(image): path.name for image, path in self.maps.items()},
            "binary_maps": binary,
            **({"binary_note": BINARY_NOTE} if binary else {}),
        }

    def __call__(self, data: dict) -> np.ndarray:
        return read_probability_map(self.maps[data["source"]]).T


def map_predictor(items: Sequence[dict], folder: str | Path) -> MapPredictor:
    """Predictions read from the saved maps in ``folder`` (see :class:`MapPredictor`)."""
    return MapPredictor(items, folder)


def model_predictor(
    network: torch.nn.Module, inferer: Callable, device: torch.device | str = "cpu", amp: bool = False
) -> Predictor:
    """Predictions of ``network`` (eval mode) through ``inferer``, as probabilities in (W, H) orientation."""
    device = torch.device(device)
    network = network.to(device).eval()

    @torch.inference_mode()
    def predict(data: dict) -> np.ndarray:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = inferer(torch.as_tensor(data["image"])[None].to(device), network)
        return torch.sigmoid(logits.float())[0, 0].cpu().numpy().astype(np.float64)

    return predict


def nan_reason(name: str, counts: dict) -> str:
    """Why metric ``name`` is NaN for confusion ``counts`` (keys ``tp``, ``fp``, ``fn``, ``tn``)."""
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


def _overlay(prob: np.ndarray, truth: np.ndarray, fov: np.ndarray, threshold: float) -> bytes:
    """The TP/FP/FN overlay as PNG bytes, (H, W) from MONAI's (W, H) arrays."""
    pred = prob >= threshold
    image = np.zeros(prob.shape + (3,), np.uint8)
    image[~fov] = OUTSIDE_COLOUR
    image[pred & truth & fov] = TP_COLOUR
    image[pred & ~truth & fov] = FP_COLOUR
    image[~pred & truth & fov] = FN_COLOUR
    buffer = io.BytesIO()
    Image.fromarray(image.transpose(1, 0, 2)).save(buffer, format="PNG")
    return buffer.getvalue()


def _plot_curves(auc_metric: PixelAUCMetric, output_dir: Path, values: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prob, label = auc_metric.pooled_pixels()
    if label.all() or not label.any():
        return
    fpr, tpr, _ = roc_curve(label, prob)
    precision, recall, _ = precision_recall_curve(label, prob)
    for name, (x, y, xlabel, ylabel, key) in {
        "roc.png": (fpr, tpr, "1 - specificity", "sensitivity", "auc"),
        "pr.png": (recall, precision, "recall (sensitivity)", "precision", "pr_auc"),
    }.items():
        step = max(1, len(x) // 5000)
        fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
        ax.plot(x[::step], y[::step], lw=1.5, label=f"{key.upper().replace('_', ' ')} = {values[key]:.4f}")
        ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.01), title=f"{key.upper()} (pooled pixels)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if name == "roc.png" else "lower left")
        fig.tight_layout()
        with atomic_path(output_dir / name) as temporary:
            fig.savefig(temporary)
        plt.close(fig)


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


def evaluate(
    items: Sequence[dict],
    predict: Predictor,
    output_dir: str | Path,
    use_fov: bool = True,
    threshold: float = 0.5,
    gt_roundtrip: int | None = None,
    connectivity: int = 2,
    overwrite: bool = False,
    source: str | dict = "",
) -> dict:
    """Score every item's prediction against its label and write ``metrics.json``, ``per_image.csv``, ROC and PR
    curves and ``overlays/<stem>.png`` to ``output_dir``; returns the content of ``metrics.json``. ``source``
    describes the predictions (the maps read, or the model and the inference mode that ran)."""
    output_dir = check_evaluation_folder(output_dir, overwrite)
    unlabelled = [item["image"] for item in items if "label" not in item]
    if unlabelled:
        raise EvaluationError("the datalist gives no label to evaluate against for:\n  " + "\n  ".join(unlabelled))
    steps = fundus_loading(("image", "label", "mask")) + ([FieldOfViewd("mask")] if use_fov else [])
    if gt_roundtrip:
        steps.append(GroundTruthRoundTripd("label", gt_roundtrip))
    load = Compose(steps)
    metrics = protocol_metrics(threshold, connectivity)
    names, fov_sources, overlays = [], [], {}
    for item in tqdm(items, desc="evaluating", unit="image"):
        data = load({k: v for k, v in item.items() if k in ("image", "label", "mask") and (use_fov or k != "mask")})
        data["source"] = item["image"]
        prob = np.asarray(predict(data), dtype=np.float64)
        label = data["label"][0].numpy() > 0.5
        if prob.shape != label.shape:
            raise EvaluationError(
                f"{item['image']}: the prediction is {prob.shape[1]}x{prob.shape[0]} (HxW) but the image is "
                f"{label.shape[1]}x{label.shape[0]}; nothing was written"
            )
        if not np.isfinite(prob).all():
            raise EvaluationError(
                f"{item['image']}: the prediction contains NaN or infinite values; nothing was written"
            )
        fov = data["mask"][0].numpy() > 0.5 if use_fov else np.ones_like(label)
        y_pred = torch.as_tensor(prob, dtype=torch.float32)[None, None]
        y = torch.as_tensor(np.stack([label, fov]), dtype=torch.float32)[None]
        for metric in metrics.values():
            metric(y_pred=y_pred, y=y)
        names.append(file_stem(item["image"]))
        fov_sources.append(getattr(data["mask"], "meta", {}).get("fov_source", "dataset mask") if use_fov else "none")
        overlays[names[-1]] = _overlay(prob, label, fov, threshold)
    confusion: ThresholdMetric = metrics["f1"]  # type: ignore[assignment]
    image_counts = [_counts(row) for row in confusion.counts()]
    pooled_counts = _counts(confusion.counts().sum(0))
    pooled = {name: float(metric.aggregate()) for name, metric in metrics.items()}
    per_image = {name: metric.per_image()[:, 0].tolist() for name, metric in metrics.items()}
    with warnings.catch_warnings():  # all-NaN per-image values (e.g. F1 of empty maps) give NaN, as documented
        warnings.simplefilter("ignore", RuntimeWarning)
        summary = {
            name: {"mean": float(np.nanmean(values)), "sd": float(np.nanstd(values))}
            for name, values in per_image.items()
        }
    rows = []
    for index, name in enumerate(names):
        values = {metric: per_image[metric][index] for metric in metrics}
        reasons = {k: nan_reason(k, image_counts[index]) for k, v in values.items() if np.isnan(v)}
        rows.append(
            {
                "image": name,
                **values,
                **image_counts[index],
                "fov_source": fov_sources[index],
                **({"nan_reasons": reasons} if reasons else {}),
            }
        )
    content = {
        "protocol": {
            "region": _region(use_fov, fov_sources),
            "ground_truth": f"label resized to {gt_roundtrip}x{gt_roundtrip} and back, > 0.5 (released code)"
            if gt_roundtrip
            else "label file as given, > 0.5",
            **protocol_rules(metrics),
            "predictions": source,
            "images": len(names),
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
    _write_outputs(output_dir, content, overlays, metrics["auc"])  # type: ignore[arg-type]
    return content


def _write_outputs(output_dir: Path, content: dict, overlays: dict[str, bytes], auc: PixelAUCMetric) -> None:
    """Overlays, per_image.csv and curves, each written atomically, then metrics.json last (an earlier run's
    metrics.json is removed first, so the folder never pairs new files with an old summary). The overlays of an
    earlier evaluation's images that are not in this one, and the temporary files an interrupted evaluation left,
    are removed: the folder holds this evaluation only."""
    folder = output_dir / "overlays"
    folder.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").unlink(missing_ok=True)
    for leftover in remove_leftovers(output_dir) + remove_leftovers(folder):
        logger.info(f"removed {leftover}, left by an interrupted write")
    for name, png in overlays.items():
        with atomic_path(folder / f"{name}.png") as temporary:
            temporary.write_bytes(png)
    stale = sorted(p for p in folder.glob("*.png") if p.stem not in overlays and not p.name.startswith("."))
    for path in stale:
        path.unlink()
    if stale:
        logger.info(
            f"removed {len(stale)} overlay(s) of the earlier evaluation whose images are not in this one: "
            + ", ".join(p.name for p in stale)
        )
    fields = ["image", *content["pooled"], *COUNT_FIELDS, "fov_source"]
    with atomic_path(output_dir / "per_image.csv") as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(content["per_image"])
    _plot_curves(auc, output_dir, content["pooled"])
    atomic_write_json(output_dir / "metrics.json", content)


def summary_table(content: dict) -> str:
    """The console summary: pooled value and per-image mean ± sd of every metric, and why a value is NaN."""
    lines = [f"{'metric':<14}{'pooled':>10}   {'per image (mean ± sd)':>22}"]
    for name, value in content["pooled"].items():
        stats = content["per_image_mean_sd"][name]
        line = f"{name:<14}{value:>10.4f}   {stats['mean']:>12.4f} ± {stats['sd']:.4f}"
        reason = content["nan_reasons"].get(name) or ("NaN in every image" if np.isnan(stats["mean"]) else None)
        lines.append(f"{line}   (nan: {reason})" if reason else line)
    counts = content["pooled_counts"]
    lines.append("pooled counts: " + ", ".join(f"{k} {counts[k]:,}" for k in COUNT_FIELDS))
    return "\n".join(lines)
