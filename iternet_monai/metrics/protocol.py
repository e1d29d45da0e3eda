"""The evaluation protocol in one place: the metrics that ``iternet-monai evaluate`` and the bundle's
``evaluate.json`` report (both build them here), and the rules ``metrics.json`` records next to their values."""

from __future__ import annotations

from monai.metrics import CumulativeIterationMetric

from iternet_monai.metrics.topology import (
    CONNECTIVITY_THRESHOLDS,
    Betti0ErrorMetric,
    CALMetric,
    ClDiceMetric,
    ConnectivityMetric,
)
from iternet_monai.metrics.vessel import THRESHOLD_METRICS, PixelAUCMetric, ThresholdMetric

__all__ = ["POOLED_METRICS", "protocol_metrics", "protocol_rules"]

# Metrics computed over the pixels of all images together (the paper's way); the rest are means of per-image values.
POOLED_METRICS = ("auc", "pr_auc", *THRESHOLD_METRICS)


def protocol_metrics(threshold: float = 0.5, connectivity: int = 2) -> dict[str, CumulativeIterationMetric]:
    """Every metric of the protocol, by report name, in report order: pixel AUC and PR AUC, the confusion-matrix
    metrics at ``prob >= threshold``, connectivity (paper eq. 3), CAL and its factors, clDice and the Betti-0 error;
    ``connectivity`` 2 counts 8-connected components, 1 4-connected. Inputs are MONAI's (W, H) arrays."""
    return {
        "auc": PixelAUCMetric("roc"),
        "pr_auc": PixelAUCMetric("pr"),
        **{name: ThresholdMetric(name, threshold) for name in THRESHOLD_METRICS},
        "connectivity": ConnectivityMetric(connectivity=connectivity),
        "cal": CALMetric("cal", threshold, connectivity=connectivity),
        **{f"cal_{part}": CALMetric(part, threshold, connectivity=connectivity) for part in ("c", "a", "l")},
        "cldice": ClDiceMetric(threshold),
        "betti0_error": Betti0ErrorMetric(threshold, connectivity),
    }


def protocol_rules(metrics: dict[str, CumulativeIterationMetric]) -> dict:
    """The rules behind the numbers of ``metrics`` (made by :func:`protocol_metrics`), read from the metrics
    themselves, as ``metrics.json`` records them."""
    threshold = metrics["f1"].threshold
    connectivity, cal = metrics["connectivity"], metrics["cal"]
    neighbours = 4 if connectivity.connectivity == 1 else 8
    return {
        "binarisation": f"prob >= {threshold}",
        "pooled": f"{', '.join(POOLED_METRICS)}: over all pixels of all images (confusion counts summed first); "
        "the other metrics: mean of per-image values, NaN values left out",
        "confusion_metrics": "MONAI compute_confusion_matrix_metric on [TP, FP, TN, FN] inside the region; iou is "
        "its threat score TP / (TP + FP + FN)",
        "components": f"{neighbours}-connected, inside the region",
        "skeletons": "skimage.morphology.skeletonize on the (H, W) image as stored",
        "connectivity": {
            "definition": "IterNet paper eq. 3: trapezoid area over t of C(t) = 1 - |S_P(t) - S_G| / S_Max if "
            "|S_P(t) - S_G| <= S_Max else 0; S_P(t), S_G: components of prediction and ground truth; "
            "S_Max = alpha x ground-truth skeleton pixels",
            "alpha": connectivity.alpha,
            "thresholds": [float(t) for t in CONNECTIVITY_THRESHOLDS],
            "t0_rule": "prob > 0 at t = 0, prob >= t elsewhere",
        },
        "cal": {
            "definition": "Gegundez-Arias et al., IEEE TMI 2012: C = 1 - min(1, |#C(S) - #C(S_G)| / #(S_G)); "
            "A = #((dil_alpha(S) & S_G) | (S & dil_alpha(S_G))) / #(S | S_G); "
            "L = #((skel(S) & dil_beta(S_G)) | (dil_beta(S) & skel(S_G))) / #(skel(S) | skel(S_G)); CAL = C x A x L",
            "alpha": cal.alpha,
            "beta": cal.beta,
            "dilation": "disc of radius alpha (beta)",
        },
        "betti0_error": "|components(prediction) - components(ground truth)|",
    }
