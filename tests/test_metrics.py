import numpy as np
import pytest
import torch
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from skimage.morphology import skeletonize
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_score, recall_score, roc_auc_score

from iternet_monai.handlers import Connectivity, PixelAUC, VesselThresholdMetric
from iternet_monai.metrics import (
    Betti0ErrorMetric,
    ClDiceMetric,
    ConnectivityMetric,
    PixelAUCMetric,
    ThresholdMetric,
    cldice,
    connectivity,
)


def batch(seed: int = 0, n: int = 3, size: int = 24):
    rng = np.random.default_rng(seed)
    label = rng.random((n, 1, size, size)) > 0.7
    prob = np.clip(label * 0.4 + rng.random(label.shape) * 0.6, 0, 1)
    fov = np.zeros_like(label)
    fov[..., 2:-2, 3:-3] = True
    return prob, label, fov


def as_y(label, fov):
    return torch.as_tensor(np.concatenate([label, fov], axis=1), dtype=torch.float32)


def test_pooled_metrics_equal_scikit_learn_inside_the_fov():
    prob, label, fov = batch()
    y_pred, y = torch.as_tensor(prob, dtype=torch.float32), as_y(label, fov)
    p, g = prob[fov].astype(np.float32).astype(np.float64), label[fov]
    auc = PixelAUCMetric()
    auc(y_pred, y)
    assert auc.aggregate() == pytest.approx(roc_auc_score(g, p), abs=1e-12)
    hard = p >= 0.5
    expected = {
        "f1": f1_score(g, hard),
        "sensitivity": recall_score(g, hard),
        "precision": precision_score(g, hard),
        "specificity": recall_score(~g, ~hard),
        "accuracy": accuracy_score(g, hard),
        "iou": jaccard_score(g, hard),
    }
    for name, value in expected.items():
        metric = ThresholdMetric(name)
        metric(y_pred, y)
        assert float(metric.aggregate()) == pytest.approx(value, abs=1e-12), name


def test_whole_image_when_no_fov_channel():
    prob, label, _ = batch(1)
    auc = PixelAUCMetric()
    auc(torch.as_tensor(prob), torch.as_tensor(label, dtype=torch.float32))
    assert auc.aggregate() == pytest.approx(roc_auc_score(label.ravel(), prob.ravel()))


def test_pr_auc_is_the_trapezoid_of_the_precision_recall_curve():
    prob = np.array([[[[0.9, 0.8, 0.3, 0.1]]]])
    label = np.array([[[[1, 0, 1, 0]]]], bool)
    metric = PixelAUCMetric("pr")
    metric(torch.as_tensor(prob), torch.as_tensor(label, dtype=torch.float32))
    # precision/recall points (recall asc): (0, 1), (0.5, 1), (0.5, 0.5), (1, 2/3), (1, 0.5)
    expected = 0.5 * (1 + 1) / 2 + 0.5 * (0.5 + 2 / 3) / 2
    assert metric.aggregate() == pytest.approx(expected)


def test_pooled_and_per_image_differ_on_a_built_case():
    # image 1: 1 TP, 0 FP, 0 FN (F1 = 1); image 2: 1 TP, 3 FP (F1 = 0.4). Pooled 2TP, 3FP: 4/7; mean 0.7.
    y = torch.zeros(2, 1, 1, 4)
    y[0, 0, 0, 0] = y[1, 0, 0, 0] = 1
    y_pred = torch.zeros(2, 1, 1, 4)
    y_pred[0, 0, 0, 0] = 1
    y_pred[1, 0, 0, :] = 1
    pooled, per_image = ThresholdMetric("f1"), ThresholdMetric("f1", pooled=False)
    for metric in (pooled, per_image):
        metric(y_pred, y)
    assert float(pooled.aggregate()) == pytest.approx(4 / 7)
    assert float(per_image.aggregate()) == pytest.approx(0.7)
    assert per_image.per_image()[:, 0].tolist() == pytest.approx([1.0, 0.4])


def test_empty_ground_truth_gives_documented_values():
    y = torch.zeros(1, 1, 8, 8)
    y_pred = torch.zeros(1, 1, 8, 8)
    auc, f1, spec = PixelAUCMetric(), ThresholdMetric("f1"), ThresholdMetric("specificity")
    for metric in (auc, f1, spec):
        metric(y_pred, y)
    assert np.isnan(auc.aggregate()) and np.isnan(float(f1.aggregate())) and float(spec.aggregate()) == 1.0
    conn = ConnectivityMetric()
    conn(y_pred, y)
    assert float(conn.aggregate()) == 1.0
    y_pred[..., 2, 2] = 1.0
    conn.reset()
    conn(y_pred, y)
    assert float(conn.aggregate()) == 0.0


def test_nan_and_size_mismatch_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        PixelAUCMetric()(torch.full((1, 1, 4, 4), float("nan")), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="differs from ground truth"):
        ThresholdMetric()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


def vessel_tree():
    truth = np.zeros((64, 64), bool)
    truth[10, 5:60] = True
    truth[10:55, 30] = True
    truth[40, 10:50] = True
    return truth


def test_connectivity_of_the_ground_truth_itself_is_one():
    truth = vessel_tree()
    assert connectivity(truth.astype(float), truth) == 1.0


def test_connectivity_of_a_vessel_broken_in_two_follows_the_formula():
    truth = vessel_tree()
    broken = truth.copy()
    broken[10, 20] = False  # one segment more at every threshold in (0, 1]
    s_max = 0.05 * skeletonize(truth).sum()
    assert connectivity(broken.astype(float), truth) == pytest.approx(1 - 1 / s_max)


def test_connectivity_is_zero_with_more_than_s_max_extra_fragments():
    truth = vessel_tree()
    s_max = 0.05 * skeletonize(truth).sum()
    noisy = truth.copy()
    noisy[60::2, ::2] = True  # isolated dots: far more than S_Max extra components
    noisy[0::2, 0:4:2] = True
    assert (noisy & ~truth).sum() > s_max
    assert connectivity(np.where(noisy, 1.0, 0.0), truth) == 0.0


def test_connectivity_options_4_neighbours_counts_diagonal_breaks():
    truth = np.zeros((20, 20), bool)
    idx = np.arange(2, 18)
    truth[idx, idx] = True  # a diagonal line: 1 component in 8-connectivity, 16 in 4-connectivity
    metric8, metric4 = ConnectivityMetric(), ConnectivityMetric(connectivity=1)
    y_pred, y = (
        torch.as_tensor(truth, dtype=torch.float32)[None, None],
        torch.as_tensor(truth, dtype=torch.float32)[None, None],
    )
    metric8(y_pred, y)
    metric4(y_pred, y)
    assert float(metric8.aggregate()) == 1.0 and float(metric4.aggregate()) == 1.0
    with pytest.raises(ValueError, match="connectivity must be 1"):
        ConnectivityMetric(connectivity=8)


def test_cldice_and_betti0_on_hand_built_cases():
    truth = vessel_tree()
    assert cldice(truth, truth) == 1.0
    half = truth.copy()
    half[40, :] = False  # drop the lower branch: topology precision 1, sensitivity < 1
    skel = skeletonize(truth)
    sens = (skel & half).sum() / skel.sum()
    assert cldice(half, truth) == pytest.approx(2 * sens / (1 + sens))
    betti = Betti0ErrorMetric()
    broken = truth.copy()
    broken[10, 20] = False
    betti(
        torch.as_tensor(broken, dtype=torch.float32)[None, None],
        torch.as_tensor(truth, dtype=torch.float32)[None, None],
    )
    assert float(betti.aggregate()) == 1.0
    cl = ClDiceMetric()
    cl(torch.as_tensor(truth, dtype=torch.float32)[None, None], torch.as_tensor(truth, dtype=torch.float32)[None, None])
    assert float(cl.aggregate()) == 1.0


def test_handlers_inside_a_supervised_evaluator():
    prob, label, fov = batch(2, n=4)
    data = [{"image": torch.as_tensor(p, dtype=torch.float32), "label_fov": y} for p, y in zip(prob, as_y(label, fov))]
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    pair = from_engine(["pred", "label"])  # the evaluator stores prepare_batch's target as "label"
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=torch.nn.Identity(),
        prepare_batch=lambda batch, device, non_blocking, **kw: (batch["image"], batch["label_fov"]),
        key_val_metric={"val_auc": PixelAUC(output_transform=pair)},
        additional_metrics={
            "val_f1": VesselThresholdMetric("f1", output_transform=pair),
            "val_conn": Connectivity(output_transform=pair),
        },
    )
    evaluator.run()
    g, p = label[fov], prob[fov].astype(np.float32).astype(np.float64)
    assert evaluator.state.metrics["val_auc"] == pytest.approx(roc_auc_score(g, p))
    assert evaluator.state.metrics["val_f1"] == pytest.approx(f1_score(g, p >= 0.5))
    assert evaluator.state.metric_details["val_f1"].shape == (4, 1)
    per_image = [f1_score(label[i][fov[i]], prob[i][fov[i]] >= 0.5) for i in range(4)]
    assert evaluator.state.metric_details["val_f1"][:, 0].tolist() == pytest.approx(per_image)
    assert evaluator.state.metric_details["val_auc"].shape == (4, 1)
