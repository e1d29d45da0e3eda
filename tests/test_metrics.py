import numpy as np
import pytest
import torch
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from skimage.morphology import skeletonize
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_score, recall_score, roc_auc_score

from iternet_monai.handlers.metric_handlers import Connectivity, PixelAUC, VesselThresholdMetric
from iternet_monai.metrics import (
    Betti0ErrorMetric,
    CALMetric,
    ClDiceMetric,
    ConnectivityMetric,
    PixelAUCMetric,
    ThresholdMetric,
    cal,
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


def test_threshold_metrics_keep_one_confusion_count_per_image():
    prob, label, fov = batch(3)
    metric = ThresholdMetric("f1")
    metric(torch.as_tensor(prob, dtype=torch.float32), as_y(label, fov))
    for image, counts in enumerate(metric.counts().tolist()):
        g, hard = label[image][fov[image]], prob[image][fov[image]].astype(np.float32) >= 0.5
        assert counts == [(hard & g).sum(), (hard & ~g).sum(), (~hard & ~g).sum(), (~hard & g).sum()]
    per_image = [f1_score(label[i][fov[i]], prob[i][fov[i]].astype(np.float32) >= 0.5) for i in range(3)]
    assert metric.per_image()[:, 0].tolist() == pytest.approx(per_image)


def truth_hw_and_prob(drive):
    """DRIVE's first test label and FoV as stored, (H, W), and a probability map with breaks and noise."""
    from PIL import Image

    truth = np.asarray(Image.open(drive / "test" / "1st_manual" / "01_manual1.gif")) > 0
    fov = np.asarray(Image.open(drive / "test" / "mask" / "01_test_mask.gif")) > 0
    rng = np.random.default_rng(0)
    prob = np.clip(truth * 0.55 + rng.random(truth.shape) * 0.5, 0, 1).astype(np.float32)
    return truth, fov, prob


def test_topology_metrics_do_not_depend_on_array_orientation(drive):
    """MONAI's PILReader gives (W, H) arrays and skimage's skeletonize is not transpose-invariant (shown first on
    this very label, so the test can fail): the metrics give the value of the image as stored either way."""
    from monai.transforms import Compose

    from iternet_monai.transforms.fundus import fundus_loading

    truth, fov, prob = truth_hw_and_prob(drive)
    assert skeletonize(truth).sum() != skeletonize(truth.T).sum()
    loaded = Compose(fundus_loading(("image", "label")))(
        {
            "image": str(drive / "test" / "images" / "01_test.tif"),
            "label": str(drive / "test" / "1st_manual" / "01_manual1.gif"),
        }
    )
    assert np.array_equal(loaded["label"][0].numpy() > 0.5, truth.T)  # MONAI's layout is the transpose
    y_hw = torch.as_tensor(np.stack([truth, fov]), dtype=torch.float32)[None]
    p_hw = torch.as_tensor(prob, dtype=torch.float32)[None, None]
    expected = {
        "connectivity": connectivity(prob, truth, fov),
        "cldice": cldice((prob >= 0.5) & fov, truth & fov),
        "cal_l": cal((prob >= 0.5) & fov, truth & fov)[2],
    }
    for name, make in (
        ("connectivity", lambda order: ConnectivityMetric(spatial_order=order)),
        ("cldice", lambda order: ClDiceMetric(spatial_order=order)),
        ("cal_l", lambda order: CALMetric("l", spatial_order=order)),
    ):
        values = []
        for order, y_pred, y in (("HW", p_hw, y_hw), ("WH", p_hw.transpose(-1, -2), y_hw.transpose(-1, -2))):
            metric = make(order)
            metric(y_pred, y)
            values.append(float(metric.aggregate()))
        assert values == [expected[name]] * 2, name


def dilate_oracle(mask, radius):
    """Dilation by a Euclidean disc, written independently of the metric: distance to the mask <= radius."""
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~mask) <= radius if mask.any() else mask.copy()


def cal_oracle(pred, truth, alpha=2, beta=2):
    """Gegundez-Arias et al.'s C, A, L from their definitions, with skimage's labelling and EDT dilations."""
    from skimage.measure import label as components

    c = 1 - min(1, abs(components(pred).max() - components(truth).max()) / truth.sum())
    a = ((dilate_oracle(pred, alpha) & truth) | (pred & dilate_oracle(truth, alpha))).sum() / (pred | truth).sum()
    sp, st = skeletonize(pred), skeletonize(truth)
    length = ((sp & dilate_oracle(truth, beta)) | (dilate_oracle(pred, beta) & st)).sum() / (sp | st).sum()
    return c, a, length, c * a * length


def line(shape=(30, 40), row=10, start=5, stop=35):
    mask = np.zeros(shape, bool)
    mask[row, start:stop] = True
    return mask


def test_cal_on_hand_computed_cases():
    truth = line()  # a 1-pixel vessel of 30 pixels: its own skeleton
    assert cal(truth, truth) == (1.0, 1.0, 1.0, 1.0)
    # shifted by 2 rows: every pixel is within the radius-2 disc of the other map -> A = L = 1
    assert cal(line(row=12), truth) == (1.0, 1.0, 1.0, 1.0)
    # shifted by 3 rows: nothing overlaps after dilation -> A = L = 0
    assert cal(line(row=13), truth) == (1.0, 0.0, 0.0, 0.0)
    # broken by a 2-pixel gap: one component more out of 30 vessel pixels; the gap is within reach of the dilation
    broken = truth.copy()
    broken[10, 20:22] = False
    assert cal(broken, truth) == pytest.approx((1 - 1 / 30, 1.0, 1.0, 1 - 1 / 30))
    # an extra isolated 3x3 blob 10 rows away: one component more, 9 area pixels and 1 skeleton pixel unmatched
    blob = truth.copy()
    blob[22:25, 10:13] = True
    c, a, length, product = cal(blob, truth)
    assert (c, a) == pytest.approx((1 - 1 / 30, 30 / 39))
    assert length == pytest.approx(30 / (30 + skeletonize(blob[20:27, 8:15]).sum()))
    assert product == pytest.approx(c * a * length)


def test_cal_equals_an_independent_implementation_on_random_vessel_maps():
    rng = np.random.default_rng(4)
    for _ in range(5):
        truth = np.zeros((64, 80), bool)
        for _ in range(6):  # random thick line segments
            r0, c0, r1, c1 = rng.integers(0, 64), rng.integers(0, 80), rng.integers(0, 64), rng.integers(0, 80)
            n = max(abs(r1 - r0), abs(c1 - c0)) + 1
            rows, cols = np.linspace(r0, r1, n).round().astype(int), np.linspace(c0, c1, n).round().astype(int)
            truth[rows, cols] = True
            truth[np.clip(rows + 1, 0, 63), cols] = rng.random() < 0.5
        pred = truth ^ (rng.random(truth.shape) < 0.03)
        assert cal(pred, truth) == pytest.approx(cal_oracle(pred, truth), abs=1e-12)


def test_cal_of_empty_maps_and_an_empty_map_cannot_win():
    truth = line()
    empty = np.zeros_like(truth)
    c, a, length, product = cal(empty, truth)
    assert (c, a, length, product) == (1 - 1 / 30, 0.0, 0.0, 0.0)
    both = cal(empty, empty)
    assert both[0] == 1.0 and np.isnan(both[1]) and np.isnan(both[3])
    assert cal(truth, empty)[:2] == (0.0, 0.0)
    metric = CALMetric()
    metric(torch.zeros(1, 1, 30, 40), torch.as_tensor(truth, dtype=torch.float32)[None, None])
    assert float(metric.aggregate()) == 0.0
    with pytest.raises(ValueError, match="component must be one of"):
        CALMetric("x")
