"""Topology metrics: IterNet's connectivity (paper eq. 3, never released with the original code), clDice and the
Betti-0 (component-count) error. All are per image on ``y_pred`` probabilities and ``y`` = label (+ FoV channel),
the same convention as :mod:`iternet_monai.metrics.vessel`.

Connectivity, as fixed here where the paper is silent:
    C(t) = 1 - |S_P(t) - S_G| / S_Max  if |S_P(t) - S_G| <= S_Max, else 0,
    S_P(t) = components of ``prob >= t`` inside the FoV (``prob > 0`` at t = 0, so that the first point is not the
    whole FoV and a prediction equal to the ground truth scores exactly 1),
    S_G = components of the ground truth inside the FoV,
    S_Max = alpha * L, L = pixels of the ground truth's skeleton (``skimage.morphology.skeletonize``), alpha = 0.05,
    Conn. = trapezoid area of C over t = 0, 0.01, ..., 1; 8-connectivity (``connectivity=1`` for 4).
    An empty ground truth has S_Max = 0: C(t) is then 1 where the prediction is empty too, else 0.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from scipy import ndimage
from scipy.integrate import trapezoid
from skimage.morphology import skeletonize

from .vessel import fov_pixels

__all__ = [
    "count_components",
    "connectivity",
    "cldice",
    "betti0_error",
    "ConnectivityMetric",
    "ClDiceMetric",
    "Betti0ErrorMetric",
    "CONNECTIVITY_THRESHOLDS",
]

CONNECTIVITY_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (4-neighbours) or 2 (8-neighbours), got {connectivity}")
    return ndimage.generate_binary_structure(2, connectivity)


def count_components(binary: np.ndarray, connectivity: int = 2) -> int:
    """Connected foreground components of a 2-D boolean map."""
    return int(ndimage.label(binary, structure=_structure(connectivity))[1])


def _image_arrays(y_pred: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probability, ground truth, FoV) 2-D numpy arrays of one image; checks sizes and NaN like the pixel metrics."""
    fov_pixels(y_pred, y)
    prob = y_pred[0].detach().float().cpu().numpy()
    truth = y[0].detach().cpu().numpy() > 0.5
    fov = y[1].detach().cpu().numpy() > 0.5 if y.shape[0] > 1 else np.ones_like(truth)
    return prob, truth & fov, fov


def connectivity(
    prob: np.ndarray,
    truth: np.ndarray,
    fov: np.ndarray | None = None,
    alpha: float = 0.05,
    connectivity: int = 2,
    thresholds: np.ndarray = CONNECTIVITY_THRESHOLDS,
) -> float:
    """IterNet's connectivity of one probability map against its binary ground truth (module docstring)."""
    fov = np.ones_like(truth, dtype=bool) if fov is None else fov.astype(bool)
    truth = truth.astype(bool) & fov
    s_truth = count_components(truth, connectivity)
    s_max = alpha * float(skeletonize(truth).sum())
    scores = []
    for t in thresholds:
        binary = prob >= t if t > 0 else prob > 0
        diff = abs(count_components(binary & fov, connectivity) - s_truth)
        scores.append((diff == 0) * 1.0 if s_max == 0 else (1.0 - diff / s_max if diff <= s_max else 0.0))
    return float(trapezoid(scores, thresholds))


def cldice(pred: np.ndarray, truth: np.ndarray) -> float:
    """clDice (Shit et al., CVPR 2021) of binary maps: harmonic mean of topology precision and sensitivity."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    skel_pred, skel_truth = skeletonize(pred), skeletonize(truth)
    t_prec = (skel_pred & truth).sum() / skel_pred.sum() if skel_pred.any() else float("nan")
    t_sens = (skel_truth & pred).sum() / skel_truth.sum() if skel_truth.any() else float("nan")
    if not (t_prec + t_sens) > 0:
        return float("nan") if np.isnan(t_prec + t_sens) else 0.0
    return float(2 * t_prec * t_sens / (t_prec + t_sens))


def betti0_error(pred: np.ndarray, truth: np.ndarray, connectivity: int = 2) -> float:
    """|components(prediction) - components(ground truth)|."""
    return float(abs(count_components(pred, connectivity) - count_components(truth, connectivity)))


class _PerImageMetric(CumulativeIterationMetric):
    """A metric computed per image; aggregates to the mean over images (NaN values left out)."""

    def _score(self, prob: np.ndarray, truth: np.ndarray, fov: np.ndarray) -> float:
        raise NotImplementedError

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.tensor([[self._score(*_image_arrays(p, g))] for p, g in zip(y_pred, y)], dtype=torch.float64)

    def per_image(self) -> torch.Tensor:
        """The value of every image seen so far, ``(N, 1)``."""
        return self.get_buffer()

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        return torch.nanmean(self.get_buffer())


class ConnectivityMetric(_PerImageMetric):
    """IterNet's connectivity (paper eq. 3), per image, then the mean; see the module docstring."""

    def __init__(self, alpha: float = 0.05, connectivity: int = 2) -> None:
        super().__init__()
        _structure(connectivity)
        self.alpha, self.connectivity = alpha, connectivity

    def _score(self, prob: np.ndarray, truth: np.ndarray, fov: np.ndarray) -> float:
        return connectivity(prob, truth, fov, self.alpha, self.connectivity)


class ClDiceMetric(_PerImageMetric):
    """clDice of the prediction binarised at ``threshold`` inside the FoV, per image, then the mean."""

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold

    def _score(self, prob: np.ndarray, truth: np.ndarray, fov: np.ndarray) -> float:
        return cldice((prob >= self.threshold) & fov, truth)


class Betti0ErrorMetric(_PerImageMetric):
    """Betti-0 error of the prediction binarised at ``threshold`` inside the FoV, per image, then the mean."""

    def __init__(self, threshold: float = 0.5, connectivity: int = 2) -> None:
        super().__init__()
        _structure(connectivity)
        self.threshold, self.connectivity = threshold, connectivity

    def _score(self, prob: np.ndarray, truth: np.ndarray, fov: np.ndarray) -> float:
        return betti0_error((prob >= self.threshold) & fov, truth, self.connectivity)
