"""The files of an evaluation (:class:`~iternet_monai.handlers.ProtocolReport`): TP/FP/FN overlays, ``per_image.csv``,
ROC and PR curves and ``metrics.json``, each written atomically and ``metrics.json`` last, and the console table."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import precision_recall_curve, roc_curve

from iternet_monai.metrics import PixelAUCMetric
from iternet_monai.utils.files import atomic_path, atomic_write_json, remove_leftovers

__all__ = ["COUNT_FIELDS", "overlay_png", "write_report", "summary_table"]

logger = logging.getLogger(__name__)
COUNT_FIELDS = ("tp", "fp", "fn", "tn", "fov_pixels", "vessel_pixels")
# Overlay colours: true positive, false positive, false negative, outside the FoV.
TP_COLOUR, FP_COLOUR, FN_COLOUR, OUTSIDE_COLOUR = (255, 255, 255), (230, 40, 40), (40, 120, 255), (40, 40, 40)


def overlay_png(prob: np.ndarray, truth: np.ndarray, fov: np.ndarray, threshold: float) -> bytes:
    """The TP/FP/FN overlay as PNG bytes, (H, W) from MONAI's (W, H) arrays.

    Args:
        prob: probabilities, (W, H).
        truth: the binary ground truth, (W, H).
        fov: the region scored, (W, H); pixels outside it are grey.
        threshold: vessel where ``prob >= threshold``.
    """
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


def _write_overlays(folder: Path, overlays: dict[str, bytes]) -> None:
    """Every overlay, and the removal of an earlier evaluation's overlays of images not in this one."""
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


def write_report(output_dir: Path, content: dict, overlays: dict[str, bytes], auc: PixelAUCMetric) -> None:
    """Overlays, per_image.csv and curves, each written atomically, then metrics.json last (an earlier run's
    metrics.json is removed first, so the folder never pairs new files with an old summary). The overlays of an
    earlier evaluation's images that are not in this one, and the temporary files an interrupted evaluation left,
    are removed: the folder holds this evaluation only.

    Args:
        output_dir: the evaluation's folder.
        content: what ``metrics.json`` holds.
        overlays: PNG bytes by image stem.
        auc: the pooled pixel AUC metric, whose pixels give the curves.
    """
    folder = output_dir / "overlays"
    folder.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").unlink(missing_ok=True)
    for leftover in remove_leftovers(output_dir) + remove_leftovers(folder):
        logger.info(f"removed {leftover}, left by an interrupted write")
    _write_overlays(folder, overlays)
    fields = ["image", *content["pooled"], *COUNT_FIELDS, "fov_source"]
    with atomic_path(output_dir / "per_image.csv") as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(content["per_image"])
    _plot_curves(auc, output_dir, content["pooled"])
    atomic_write_json(output_dir / "metrics.json", content)


def summary_table(content: dict) -> str:
    """The console summary: pooled value and per-image mean ± sd of every metric, and why a value is NaN.

    Args:
        content: what ``metrics.json`` holds.
    """
    lines = [f"{'metric':<14}{'pooled':>10}   {'per image (mean ± sd)':>22}"]
    for name, value in content["pooled"].items():
        stats = content["per_image_mean_sd"][name]
        line = f"{name:<14}{value:>10.4f}   {stats['mean']:>12.4f} ± {stats['sd']:.4f}"
        reason = content["nan_reasons"].get(name) or ("NaN in every image" if np.isnan(stats["mean"]) else None)
        lines.append(f"{line}   (nan: {reason})" if reason else line)
    counts = content["pooled_counts"]
    lines.append("pooled counts: " + ", ".join(f"{k} {counts[k]:,}" for k in COUNT_FIELDS))
    return "\n".join(lines)
