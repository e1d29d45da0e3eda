"""Pixel metrics of vessel probability maps, inside a field-of-view mask when one is given.

``y`` is the ground truth ``(B, 1, H, W)``, or ``(B, 2, H, W)`` with the FoV mask as channel 1 (build it with
MONAI's ``ConcatItemsd(keys=["label", "mask"])``). ``y_pred`` holds probabilities ``(B, 1, H, W)``. Every metric
keeps per-image values (``per_image()``, what ``MetricsSaver`` writes) beside its aggregate.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric, compute_confusion_matrix_metric
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score

__all__ = ["fov_pixels", "confusion_counts", "PixelAUCMetric", "ThresholdMetric", "THRESHOLD_METRICS"]


def fov_pixels(y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened (probability, binary label) pairs of one image ``(C, H, W)``, kept to the FoV if ``y`` has one."""
    if y_pred.shape[-2:] != y.shape[-2:]:
        raise ValueError(f"prediction size {tuple(y_pred.shape[-2:])} differs from ground truth {tuple(y.shape[-2:])}")
    prob, label = y_pred[0].reshape(-1).float(), (y[0] > 0.5).reshape(-1)
    if y.shape[0] > 1:
        inside = y[1].reshape(-1) > 0.5
        prob, label = prob[inside], label[inside]
    if torch.isnan(prob).any():
        raise ValueError("prediction contains NaN values")
    return prob, label


def confusion_counts(y_pred: torch.Tensor, y: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image ``[TP, FP, TN, FN]`` counts ``(B, 4)`` of the FoV pixels at ``prob >= threshold`` (the released
    code's rule), in MONAI's order. Counted as integers: MONAI's ``get_confusion_matrix`` sums in float32, which is
    exact only up to 2^24 pixels per image."""
    rows = []
    for p, g in zip(y_pred, y):
        prob, label = fov_pixels(p, g)
        pred = prob >= threshold
        rows.append(
            torch.stack([(pred & label).sum(), (pred & ~label).sum(), (~pred & ~label).sum(), (~pred & label).sum()])
        )
    return torch.stack(rows).double()


# The protocol's names of MONAI's confusion-matrix metrics (IoU is MONAI's threat score, TP / (TP + FP + FN)).
THRESHOLD_METRICS = {
    "f1": "f1 score",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "accuracy": "accuracy",
    "precision": "precision",
    "iou": "threat score",
}


class ThresholdMetric(CumulativeIterationMetric):
    """F1 (= Dice), sensitivity, specificity, accuracy, precision or IoU at a threshold (``prob >= threshold``).

    Keeps one confusion count ``[TP, FP, TN, FN]`` per image (``counts()``) and computes the value with MONAI's
    ``compute_confusion_matrix_metric``: of the summed counts with ``pooled=True`` (the paper's protocol), else per
    image and averaged. A value with a zero denominator (precision of an empty prediction, say) is NaN for that
    image and left out of the mean.
    """

    def __init__(self, metric_name: str = "f1", threshold: float = 0.5, pooled: bool = True) -> None:
        super().__init__()
        if metric_name not in THRESHOLD_METRICS:
            raise ValueError(f"unknown metric '{metric_name}'; choose one of {', '.join(THRESHOLD_METRICS)}")
        self.metric_name, self.threshold, self.pooled = metric_name, threshold, pooled

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return confusion_counts(y_pred, y, self.threshold)

    def counts(self) -> torch.Tensor:
        """The ``[TP, FP, TN, FN]`` count of every image seen so far, ``(N, 4)``."""
        return self.get_buffer()

    def per_image(self) -> torch.Tensor:
        """The metric of every image seen so far, ``(N, 1)``."""
        return compute_confusion_matrix_metric(THRESHOLD_METRICS[self.metric_name], self.counts())[:, None]

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        if self.pooled:
            return compute_confusion_matrix_metric(THRESHOLD_METRICS[self.metric_name], self.counts().sum(0))[0]
        return torch.nanmean(self.per_image())


def pixel_auc(prob: np.ndarray, label: np.ndarray, curve: str = "roc") -> float:
    """Exact area under the ROC curve (scikit-learn's ``roc_auc_score``) or under the precision-recall curve (the
    released code's trapezoid over ``precision_recall_curve``); NaN when ``label`` has a single class."""
    if label.all() or not label.any():
        return float("nan")
    if curve == "roc":
        return float(roc_auc_score(label, prob))
    precision, recall, _ = precision_recall_curve(label, prob)
    return float(auc(recall, precision))


class PixelAUCMetric(CumulativeIterationMetric):
    """Area under the ROC (``curve="roc"``) or precision-recall (``"pr"``) curve of FoV pixels: pooled over all
    images (``pooled=True``, the paper's protocol) or the mean of per-image values. Exact, not binned.

    Images have different pixel counts, which MONAI's cumulative buffers (one row per image) cannot hold, so the
    pixels are kept per image here and gathered across processes with ``all_gather_object`` when distributed.
    """

    def __init__(self, curve: str = "roc", pooled: bool = True) -> None:
        super().__init__()
        if curve not in ("roc", "pr"):
            raise ValueError(f"curve must be 'roc' or 'pr', got '{curve}'")
        self.curve, self.pooled = curve, pooled
        self._images: list[tuple[np.ndarray, np.ndarray]] = []

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> list:  # type: ignore[override]
        return [fov_pixels(p, g) for p, g in zip(y_pred, y)]

    def _compute_list(self, y_pred, y, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(y_pred, (list, tuple)):
            return [pair for p, g in zip(y_pred, y) for pair in self._compute_tensor(p[None], g[None])]
        return self._compute_tensor(y_pred, y)

    def extend(self, *data: object) -> None:
        for prob, label in data:  # type: ignore[misc]
            self._images.append((prob.detach().cpu().numpy().astype(np.float64), label.detach().cpu().numpy()))

    def reset(self) -> None:
        super().reset()
        self._images = []

    def images(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(probabilities, labels) of the FoV pixels of every image seen so far, from every process."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, self._images)
            return [image for part in gathered for image in part]
        return list(self._images)

    def pooled_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """All FoV pixels of all images: (probabilities, labels)."""
        images = self.images()
        if not images:
            raise ValueError(f"{self.__class__.__name__} has seen no image")
        return np.concatenate([p for p, _ in images]), np.concatenate([g for _, g in images])

    def per_image(self) -> torch.Tensor:
        """The AUC of every image seen so far, ``(N, 1)``."""
        return torch.tensor([pixel_auc(p, g, self.curve) for p, g in self.images()], dtype=torch.float64)[:, None]

    def aggregate(self) -> float:  # type: ignore[override]
        if not self.pooled:
            return float(torch.nanmean(self.per_image()))
        return pixel_auc(*self.pooled_pixels(), self.curve)
