"""Batch evaluation under one documented protocol, of this project's models or of any method's saved maps.

Protocol (recorded in ``metrics.json``): pixels inside the FoV mask (the datalist's, else derived from the image)
or the whole image; ``prob >= threshold`` binarisation; the label file as ground truth, or the released code's
resize round trip; AUC, PR AUC, F1, Se, Sp, Acc, precision and IoU pooled over all pixels of all images (the
paper's way) and per image (mean ± sd); connectivity (paper eq. 3), clDice and Betti-0 error per image.
"""

from __future__ import annotations

import csv
import json
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

from .errors import InputError
from .metrics import (
    THRESHOLD_METRICS,
    Betti0ErrorMetric,
    ClDiceMetric,
    ConnectivityMetric,
    PixelAUCMetric,
    ThresholdMetric,
)
from .transforms import FieldOfViewd, GroundTruthRoundTripd, fundus_loading

__all__ = [
    "PROBABILITY_SUFFIXES",
    "EvaluationError",
    "read_probability_map",
    "match_maps",
    "map_predictor",
    "model_predictor",
    "evaluate",
    "summary_table",
]

logger = logging.getLogger(__name__)
PROBABILITY_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".nii", ".nii.gz")
OUTPUT_FILES = ("metrics.json", "per_image.csv", "roc.png", "pr.png")
# Overlay colours: true positive, false positive, false negative, outside the FoV.
TP_COLOUR, FP_COLOUR, FN_COLOUR, OUTSIDE_COLOUR = (255, 255, 255), (230, 40, 40), (40, 120, 255), (40, 40, 40)


class EvaluationError(InputError):
    """An input that cannot be evaluated; the message names the image or map."""


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(PROBABILITY_SUFFIXES + (".gif", ".jpg", ".jpeg", ".ppm", ".bmp"), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_probability_map(path: str | Path) -> np.ndarray:
    """A probability map as float64 (H, W) in [0, 1]: 8-bit (/255) or 16-bit (/65535) PNG/TIFF, float TIFF, NPY,
    or NIfTI written as this project's inference writes it (first axis = width)."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            array = np.load(path).astype(np.float64)
        elif name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            array = np.squeeze(np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)).T
        else:
            with Image.open(path) as image:
                scale = {"1": 1.0, "L": 255.0, "P": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0}
                if image.mode in ("RGB", "RGBA"):
                    rgb = np.asarray(image.convert("RGB"))
                    if not (rgb[..., 0] == rgb[..., 1]).all() or not (rgb[..., 0] == rgb[..., 2]).all():
                        raise EvaluationError(f"{path}: a colour image, not a single-channel probability map")
                    image = image.convert("L")
                array = np.asarray(image.convert("L") if image.mode == "P" else image, dtype=np.float64)
                array = array / scale.get(image.mode, 1.0)
    except EvaluationError:
        raise
    except Exception as err:
        raise EvaluationError(f"{path}: cannot read the probability map ({err})") from err
    array = np.squeeze(array)
    if array.ndim != 2:
        raise EvaluationError(f"{path}: expected a 2-D probability map, got shape {array.shape}")
    if np.isnan(array).any():
        raise EvaluationError(f"{path}: the probability map contains NaN values")
    if array.min() < 0 or array.max() > 1:
        raise EvaluationError(f"{path}: values must lie in [0, 1], got [{array.min():g}, {array.max():g}]")
    return array


def match_maps(items: Sequence[dict], folder: str | Path) -> dict[str, Path]:
    """Each item's probability map in ``folder``, matched by file stem: ``<stem>.<ext>`` or ``<stem>_*.<ext>``
    (``01_test_prob.png`` for ``01_test.tif``). Names every image without a map, or with several, at once."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"prediction folder {folder} does not exist")
    maps = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith(PROBABILITY_SUFFIXES)]
    found, problems = {}, []
    for item in items:
        stem = _stem(Path(item["image"]))
        exact = [p for p in maps if _stem(p) == stem]
        candidates = exact or [p for p in maps if _stem(p).startswith(stem + "_")]
        if len(candidates) == 1:
            found[item["image"]] = candidates[0]
        else:
            what = "no map" if not candidates else f"several maps ({', '.join(p.name for p in candidates)})"
            problems.append(f"{item['image']}: {what} in {folder}")
    if problems:
        raise EvaluationError(
            f"{len(problems)} image(s) cannot be matched to a probability map:\n  " + "\n  ".join(problems)
        )
    return found


Predictor = Callable[[dict], np.ndarray]


def map_predictor(items: Sequence[dict], folder: str | Path) -> Predictor:
    """Predictions read from saved maps (see :func:`match_maps`); returned in MONAI's (W, H) orientation."""
    maps = match_maps(items, folder)
    return lambda data: read_probability_map(maps[data["source"]]).T


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


def _metrics(threshold: float, connectivity: int) -> dict:
    pooled = {"auc": PixelAUCMetric("roc"), "pr_auc": PixelAUCMetric("pr")}
    pooled.update({name: ThresholdMetric(name, threshold) for name in THRESHOLD_METRICS})
    per_image = {
        "connectivity": ConnectivityMetric(connectivity=connectivity),
        "cldice": ClDiceMetric(threshold),
        "betti0_error": Betti0ErrorMetric(threshold, connectivity),
    }
    return {**pooled, **per_image}


def _overlay(prob: np.ndarray, truth: np.ndarray, fov: np.ndarray, threshold: float) -> np.ndarray:
    pred = prob >= threshold
    image = np.zeros(prob.shape + (3,), np.uint8)
    image[~fov] = OUTSIDE_COLOUR
    image[pred & truth & fov] = TP_COLOUR
    image[pred & ~truth & fov] = FP_COLOUR
    image[~pred & truth & fov] = FN_COLOUR
    return image


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
        fig.savefig(output_dir / name)
        plt.close(fig)


def evaluate(
    items: Sequence[dict],
    predict: Predictor,
    output_dir: str | Path,
    use_fov: bool = True,
    threshold: float = 0.5,
    gt_roundtrip: int | None = None,
    connectivity: int = 2,
    overwrite: bool = False,
    source: str = "",
) -> dict:
    """Score every item's prediction against its label and write ``metrics.json``, ``per_image.csv``, ROC and PR
    curves and ``overlays/<stem>.png`` to ``output_dir``; returns the content of ``metrics.json``."""
    output_dir = Path(output_dir)
    existing = [output_dir / n for n in OUTPUT_FILES if (output_dir / n).exists()]
    if existing and not overwrite:
        raise EvaluationError(f"{existing[0]} exists; choose another output folder or pass --overwrite")
    (output_dir / "overlays").mkdir(parents=True, exist_ok=True)
    steps = fundus_loading(("image", "label", "mask")) + ([FieldOfViewd("mask")] if use_fov else [])
    if gt_roundtrip:
        steps.append(GroundTruthRoundTripd("label", gt_roundtrip))
    load = Compose(steps)
    metrics = _metrics(threshold, connectivity)
    names = []
    for item in tqdm(items, desc="evaluating", unit="image"):
        if "label" not in item:
            raise EvaluationError(f"{item['image']}: the datalist gives no label to evaluate against")
        data = load({k: v for k, v in item.items() if k in ("image", "label", "mask") and (use_fov or k != "mask")})
        data["source"] = item["image"]
        prob = np.asarray(predict(data), dtype=np.float64)
        label = data["label"][0].numpy() > 0.5
        if prob.shape != label.shape:
            raise EvaluationError(
                f"{item['image']}: the prediction is {prob.shape[1]}x{prob.shape[0]} (HxW) but the image is "
                f"{label.shape[1]}x{label.shape[0]}"
            )
        if np.isnan(prob).any():
            raise EvaluationError(f"{item['image']}: the prediction contains NaN values")
        fov = data["mask"][0].numpy() > 0.5 if use_fov else np.ones_like(label)
        y_pred = torch.as_tensor(prob, dtype=torch.float32)[None, None]
        y = torch.as_tensor(np.stack([label, fov]), dtype=torch.float32)[None]
        for metric in metrics.values():
            metric(y_pred=y_pred, y=y)
        names.append(_stem(Path(item["image"])))
        Image.fromarray(_overlay(prob, label, fov, threshold).transpose(1, 0, 2)).save(
            output_dir / "overlays" / f"{names[-1]}.png"
        )
    pooled = {name: float(metric.aggregate()) for name, metric in metrics.items()}
    per_image = {name: metric.per_image()[:, 0].tolist() for name, metric in metrics.items()}
    with warnings.catch_warnings():  # all-NaN per-image values (e.g. F1 of empty maps) give NaN, as documented
        warnings.simplefilter("ignore", RuntimeWarning)
        summary = {
            name: {"mean": float(np.nanmean(values)), "sd": float(np.nanstd(values))}
            for name, values in per_image.items()
        }
    content = {
        "protocol": {
            "region": "field of view (datalist mask, else derived from the image)" if use_fov else "whole image",
            "threshold": f"prob >= {threshold}",
            "ground_truth": f"label resized to {gt_roundtrip}x{gt_roundtrip} and back, > 0.5 (released code)"
            if gt_roundtrip
            else "label file as given",
            "pooled": "auc, pr_auc and threshold metrics over all pixels of all images; topology metrics: mean of "
            "per-image values",
            "connectivity": f"paper eq. 3, alpha 0.05, thresholds 0:0.01:1, {4 if connectivity == 1 else 8}-connected",
            "predictions": source,
            "images": len(names),
        },
        "pooled": pooled,
        "per_image_mean_sd": summary,
        "per_image": [{"image": n, **{k: v[i] for k, v in per_image.items()}} for i, n in enumerate(names)],
    }
    (output_dir / "metrics.json").write_text(json.dumps(content, indent=1) + "\n")
    with open(output_dir / "per_image.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", *metrics])
        writer.writeheader()
        writer.writerows(content["per_image"])
    _plot_curves(metrics["auc"], output_dir, pooled)
    return content


def summary_table(content: dict) -> str:
    """The console summary: pooled value and per-image mean ± sd of every metric."""
    lines = [f"{'metric':<14}{'pooled':>10}   {'per image (mean ± sd)':>22}"]
    for name, value in content["pooled"].items():
        stats = content["per_image_mean_sd"][name]
        lines.append(f"{name:<14}{value:>10.4f}   {stats['mean']:>12.4f} ± {stats['sd']:.4f}")
    return "\n".join(lines)
