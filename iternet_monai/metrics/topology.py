"""Topology metrics: IterNet's connectivity (paper eq. 3, never released with the original code), the CAL function
of Gegúndez-Arias et al. (IEEE TMI 2012), clDice and the Betti-0 (component-count) error. All are per image on
``y_pred`` probabilities and ``y`` = label (+ FoV channel), the same convention as :mod:`iternet_monai.metrics.vessel`,
and computed on the image as stored, (H, W): MONAI's PILReader gives (W, H) arrays (``spatial_order="WH"``, the
default) and scikit-image's ``skeletonize`` is not transpose-invariant, so the metric classes transpose them back.

Connectivity, as fixed here where the paper is silent:
    C(t) = 1 - |S_P(t) - S_G| / S_Max  if |S_P(t) - S_G| <= S_Max, else 0,
    S_P(t) = components of ``prob >= t`` inside the FoV (``prob > 0`` at t = 0, so that the first point is not the
    whole FoV and a prediction equal to the ground truth scores exactly 1),
    S_G = components of the ground truth inside the FoV,
    S_Max = alpha * L, L = pixels of the ground truth's skeleton (``skimage.morphology.skeletonize``), alpha = 0.05,
    Conn. = trapezoid area of C over t = 0, 0.01, ..., 1; 8-connectivity (``connectivity=1`` for 4).
    An empty ground truth has S_Max = 0: C(t) is then 1 where the prediction is empty too, else 0.
    It rewards an empty map: |0 - S_G| is far below S_Max on a real ground truth (0.9936 on DRIVE's test set).

CAL (Gegúndez-Arias et al. 2012), of the binarised prediction S and the ground truth S_G inside the FoV:
    C = 1 - min(1, |#_C(S) - #_C(S_G)| / #(S_G))       (#_C: connected components, #: pixels)
    A = #((δα(S) ∩ S_G) ∪ (S ∩ δα(S_G))) / #(S ∪ S_G)    (δα: dilation by a disc of radius α = 2)
    L = #((φ(S) ∩ δβ(S_G)) ∪ (δβ(S) ∩ φ(S_G))) / #(φ(S) ∪ φ(S_G))   (φ: skeleton, β = 2)
    CAL = C · A · L. An empty prediction scores A = L = CAL = 0. With an empty ground truth C is 1 for an empty
    prediction, else 0; A and L are NaN when both maps (or both skeletons) are empty.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from scipy import ndimage
from scipy.integrate import trapezoid
from skimage.morphology import disk, skeletonize

from iternet_monai.metrics.vessel import fov_pixels

__all__ = [
    "count_components",
    "connectivity",
    "cldice",
    "betti0_error",
    "ConnectivityMetric",
    "ClDiceMetric",
    "Betti0ErrorMetric",
    "CALMetric",
    "cal",
    "CAL_COMPONENTS",
    "CONNECTIVITY_THRESHOLDS",
    "SPATIAL_ORDERS",
]

CONNECTIVITY_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)
CAL_COMPONENTS = ("c", "a", "l", "cal")
# Order of the two spatial axes of y_pred and y: "WH" as MONAI's PILReader loads 2-D images, "HW" as stored.
SPATIAL_ORDERS = ("WH", "HW")


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (4-neighbours) or 2 (8-neighbours), got {connectivity}")
    return ndimage.generate_binary_structure(2, connectivity)


def count_components(binary: np.ndarray, connectivity: int = 2) -> int:
    """Connected foreground components of a 2-D boolean map."""
    return int(ndimage.label(binary, structure=_structure(connectivity))[1])


def _image_arrays(
    y_pred: torch.Tensor, y: torch.Tensor, spatial_order: str = "WH"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probability, ground truth, FoV) 2-D numpy arrays of one image in (H, W) order; checks sizes and NaN like the
    pixel metrics."""
    fov_pixels(y_pred, y)
    prob = y_pred[0].detach().float().cpu().numpy()
    truth = y[0].detach().cpu().numpy() > 0.5
    fov = y[1].detach().cpu().numpy() > 0.5 if y.shape[0] > 1 else np.ones_like(truth)
    if spatial_order == "WH":
        prob, truth, fov = prob.T, truth.T, fov.T
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


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, structure=disk(radius))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> float:
    return float(numerator.sum() / denominator.sum()) if denominator.any() else float("nan")


def cal(
    pred: np.ndarray, truth: np.ndarray, alpha: int = 2, beta: int = 2, connectivity: int = 2
) -> tuple[float, float, float, float]:
    """(C, A, L, CAL) of a binary prediction against its binary ground truth (module docstring); (H, W) arrays."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    if truth.any():
        difference = abs(count_components(pred, connectivity) - count_components(truth, connectivity))
        c = 1.0 - min(1.0, difference / float(truth.sum()))
    else:
        c = 0.0 if pred.any() else 1.0
    a = _ratio((_dilate(pred, alpha) & truth) | (pred & _dilate(truth, alpha)), pred | truth)
    skel_pred, skel_truth = skeletonize(pred), skeletonize(truth)
    l_value = _ratio((skel_pred & _dilate(truth, beta)) | (_dilate(pred, beta) & skel_truth), skel_pred | skel_truth)
    return c, a, l_value, c * a * l_value


class _PerImageMetric(CumulativeIterationMetric):
    """A metric computed per image on (H, W) arrays; aggregates to the mean over images (NaN values left out).
    ``spatial_order`` says how the inputs are laid out (``SPATIAL_ORDERS``)."""

    def __init__(self, spatial_order: str = "WH") -> None:
        super().__init__()
        if spatial_order not in SPATIAL_ORDERS:
            raise ValueError(f"spatial_order must be one of {', '.join(SPATIAL_ORDERS)}, got '{spatial_order}'")
        self.spatial_order = spatial_order

    def _score(self, prob: np.ndarray, truth: np.ndarray, fov: np.ndarray) -> float:
        raise NotImplementedError

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.tensor(
            [[self._score(*_image_arrays(p, g, self.spatial_order))] for p, g in zip(y_pred, y)], dtype=torch.float64
        )

    def per_image(self) -> torch.Tensor:
        """The value of every image seen so far, ``(N, 1)``."""
        return self.get_buffer()

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        return torch.nanmean(self.get_buffer())


class ConnectivityMetric(_PerImageMetric):
    """IterNet's connectivity (paper eq. 3), per image, then the mean; see the module docstring."""

    def __init__(self, alpha: float = 0.05, connectivity: int = 2, spatial_order: str = "WH") -> None:
        super().__init__(spatial_order)
        _structure(connectivity)
        self.alpha, self.connectivity = alpha, connectivity

    def _score(self, prob: np.ndarray, truth: np.ndarray, fov: np.ndarray) -> float:
        return connectivity(prob, truth, fov, self.alpha, self.connectivity)


class ClDiceMetric(_PerImageMetric):
    """clDice of the prediction binarised at ``threshold`` inside the FoV, per image, then the mean."""

    def __init__(self, threshold: float = 0.5, spatial_order: str = "WH") -> None:
        super().__init__(spatial_order)
        self.threshold = threshold

    def _score(self, prob: np.ndarray, truth: np.ndarray, fov: np.ndarray) -> float:
        return cldice((prob >= self.threshold) & fov, truth)


class Betti0ErrorMetric(_PerImageMetric):
    """Betti-0 error of the prediction binarised at ``threshold`` inside the FoV, per image, then the mean."""

    def __init__(self, threshold: float = 0.5, connectivity: int = 2, spatial_order: str = "WH") -> None:
        super().__init__(spatial_order)
        _structure(connectivity)
        self.threshold, self.connectivity = threshold, connectivity

    def _score(self, prob: np.ndarray, truth: np.ndarray, fov: np.ndarray) -> float:
        return betti0_error((prob >= self.threshold) & fov, truth, self.connectivity)


class CALMetric(_PerImageMetric):
    """The CAL function of Gegúndez-Arias et al. (2012) of the prediction binarised at ``threshold`` inside the FoV,
    per image, then the mean: ``component`` "cal" (the product C·A·L) or one factor, "c", "a" or "l"."""

    def __init__(
        self,
        component: str = "cal",
        threshold: float = 0.5,
        alpha: int = 2,
        beta: int = 2,
        connectivity: int = 2,
        spatial_order: str = "WH",
    ) -> None:
        super().__init__(spatial_order)
        if component not in CAL_COMPONENTS:
            raise ValueError(f"component must be one of {', '.join(CAL_COMPONENTS)}, got '{component}'")
        _structure(connectivity)
        self.component, self.threshold, self.connectivity = component, threshold, connectivity
        self.alpha, self.beta = alpha, beta

    def _score(self, prob: np.ndarray, truth: np.ndarray, fov: np.ndarray) -> float:
        values = cal((prob >= self.threshold) & fov, truth, self.alpha, self.beta, self.connectivity)
        return values[CAL_COMPONENTS.index(self.component)]
