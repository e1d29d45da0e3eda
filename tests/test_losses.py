import math

import pytest
import torch

from iternet_monai.losses.iternet_loss import IterNetLoss
from iternet_monai.networks import IterNet


def bce_by_hand(logits: torch.Tensor, target: torch.Tensor) -> float:
    total = 0.0
    for z, t in zip(logits.flatten().tolist(), target.flatten().tolist()):
        p = 1 / (1 + math.exp(-z))
        total -= t * math.log(p) + (1 - t) * math.log(1 - p)
    return total / target.numel()


def test_sum_of_bce_over_outputs_with_soft_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 1, 3, 5)
    soft = torch.rand(2, 1, 3, 5)
    expected = sum(bce_by_hand(logits[:, i], soft) for i in range(4))
    assert IterNetLoss()(logits, soft).item() == pytest.approx(expected, rel=1e-5)


def test_output_weights_and_single_output():
    logits, target = torch.randn(1, 2, 1, 4, 4), torch.rand(1, 1, 4, 4)
    weighted = IterNetLoss(output_weights=[0.25, 2.0])(logits, target).item()
    assert weighted == pytest.approx(
        0.25 * bce_by_hand(logits[:, 0], target) + 2 * bce_by_hand(logits[:, 1], target), rel=1e-5
    )
    assert IterNetLoss()(logits[:, 1], target).item() == pytest.approx(bce_by_hand(logits[:, 1], target), rel=1e-5)
    with pytest.raises(ValueError, match="output_weights has 3 entries"):
        IterNetLoss(output_weights=[1, 1, 1])(logits, target)


def test_the_first_output_weight_is_the_final_outputs():
    torch.manual_seed(0)
    net, x, target = IterNet(features=4, dropout=0.0), torch.rand(1, 3, 32, 32), torch.rand(1, 1, 32, 32)
    final_only = IterNetLoss(output_weights=[1, 0, 0, 0])(net.train()(x), target)
    assert final_only.item() == pytest.approx(IterNetLoss()(net.eval()(x), target).item(), rel=1e-6)


def test_cldice_term_is_off_by_default_and_adds_when_on():
    logits, target = torch.randn(1, 4, 1, 16, 16), (torch.rand(1, 1, 16, 16) > 0.7).float()
    plain = IterNetLoss()(logits, target)
    with_cldice = IterNetLoss(cldice_weight=1.0)(logits, target)
    assert with_cldice > plain
