import subprocess
import sys

import pytest
import torch
from monai.networks.nets import DynUNet
from torch import nn

from iternet_monai.engines.checkpoints import CheckpointError, load_weights, weights_shape
from iternet_monai.networks import REFINERIES, IterNet, MiniUNet, WeightsShapeError, register_refinery
from iternet_monai.utils.errors import InputError, find_input_error


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def private_params(features: int, iteration: int) -> int:
    """1x1 reduction (features*(i+1) -> features) plus 1x1 head (features -> 1) of iteration i (1-based)."""
    return features * (iteration + 1) * features + features + features + 1


def test_default_has_the_released_codes_parameter_count():
    assert count(IterNet()) == 8_244_356


def test_paper_figure_depth_parameter_count():
    assert count(IterNet(depth=3)) == 9_703_428


def test_refinery_is_shared_and_only_private_layers_grow_with_iterations():
    nets = {k: IterNet(features=8, iterations=k) for k in (1, 2, 3, 5)}
    for k, net in nets.items():
        assert len(net.iterations) == k
        assert count(net) == count(nets[1]) + sum(private_params(8, i) for i in range(2, k + 1))
    net = nets[3]
    calls = []
    net.refinery.stem.register_forward_hook(lambda m, i, o: calls.append(("stem", m)))
    net.refinery.register_forward_hook(lambda m, i, o: calls.append(("refinery", m)))
    net.eval()(torch.rand(1, 3, 32, 32))
    assert [c[0] for c in calls] == ["stem", "refinery"] * 3
    assert all(c[1] is net.refinery.stem for c in calls if c[0] == "stem")
    shared = {id(p) for p in net.refinery.parameters()}
    private = {id(p) for p in net.iterations.parameters()}
    assert not shared & private
    assert count(net.refinery) == count(MiniUNet(features=8))


def test_shapes_in_train_and_eval_mode_for_non_square_input():
    net = IterNet(features=4, iterations=2)
    x = torch.rand(2, 3, 48, 80)
    assert net.train()(x).shape == (2, 3, 1, 48, 80)
    assert net.eval()(x).shape == (2, 1, 48, 80)


def test_training_outputs_follow_dynunets_deep_supervision_contract():
    """As MONAI's DynUNet: in training the outputs are stacked on dim 1 with the final output (eval mode's) first;
    IterNet's others follow from the last iteration back to the base UNet."""
    x = torch.rand(1, 3, 32, 48)
    dynunet = DynUNet(2, 3, 1, [3, 3, 3], [1, 2, 2], [2, 2], deep_supervision=True, deep_supr_num=1)
    assert torch.allclose(dynunet.train()(x)[:, 0], dynunet.eval()(x))
    net = IterNet(features=4, iterations=3, dropout=0.0)
    heads = []
    for head in [net.head, *(layers.head for layers in net.iterations)]:
        head.register_forward_hook(lambda module, inputs, output: heads.append(output))
    stacked = net.train()(x)
    assert stacked.shape == (1, 4, 1, 32, 48)
    assert torch.allclose(stacked[:, 0], net.eval()(x))
    assert all(torch.equal(stacked[:, i], output) for i, output in enumerate(reversed(heads[:4])))


@pytest.mark.parametrize("size", [(30, 32), (32, 40), (50, 50)])
def test_size_not_divisible_by_16_is_refused(size):
    with pytest.raises(ValueError, match="divisible by 16"):
        IterNet(features=4)(torch.rand(1, 3, *size))


def test_gradients_reach_every_parameter():
    net = IterNet(features=4, depth=3).train()
    net(torch.rand(2, 3, 32, 32)).sum().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_glorot_init_and_zero_bias():
    net = IterNet(features=8)
    conv = net.first[0].conv
    bound = (6 / (3 * 9 + 8 * 9)) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.5 * bound
    assert all(m.bias.abs().sum() == 0 for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


def test_norm_option_adds_normalisation_layers():
    assert not any(isinstance(m, nn.BatchNorm2d) for m in IterNet(features=4).modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in IterNet(features=4, norm="batch").modules())


def test_registered_refinery_is_selected_by_name():
    @register_refinery("plain_convs")
    class PlainConvs(nn.Module):
        def __init__(self, features, depth, dropout, norm):
            super().__init__()
            self.stem = nn.Conv2d(features, features, 3, padding=1)
            self.body = nn.Conv2d(features, features, 3, padding=1)

        def forward(self, x):
            return self.body(x)

    try:
        net = IterNet(features=4, refinery="plain_convs")
        assert isinstance(net.refinery, PlainConvs)
        assert net.eval()(torch.rand(1, 3, 16, 16)).shape == (1, 1, 16, 16)
    finally:
        REFINERIES.components.pop("plain_convs")
    with pytest.raises(ValueError, match="unknown refinery 'plain_convs'"):
        IterNet(refinery="plain_convs")


def test_torchscript_matches_eager():
    net = IterNet(features=4).eval()
    x = torch.rand(1, 3, 32, 48)
    assert torch.allclose(torch.jit.script(net)(x), net(x))


def test_weights_of_another_shape_or_network_are_refused_in_one_line_naming_both(tmp_path):
    small = IterNet(features=4).state_dict()
    both = r"the weights are for IterNet\(features=4, iterations=3, depth=2\) but the network is IterNet\(features=32"
    with pytest.raises(WeightsShapeError, match=rf"^{both}.*; build the network from the weights"):
        IterNet().load_state_dict(small)
    with pytest.raises(WeightsShapeError, match="^the weights are for a network of 1 tensors that is not an IterNet"):
        IterNet(features=4).load_state_dict({"head.bias": small["head.bias"]})
    IterNet(features=4).load_state_dict({"head.bias": small["head.bias"]}, strict=False)
    torch.save(small, tmp_path / "small.pt")
    with pytest.raises(CheckpointError, match=rf"small.pt: {both}"):
        load_weights(IterNet(), tmp_path / "small.pt")
    assert weights_shape(small, "small.pt")["features"] == 4
    with pytest.raises(CheckpointError, match=r"^other.pt: not IterNet weights \(a network of 1 tensors"):
        weights_shape({"x": torch.zeros(1)}, "other.pt")


def test_weights_of_another_shape_are_refused_in_one_line_naming_both_shapes():
    with pytest.raises(WeightsShapeError) as raised:
        IterNet(features=8).load_state_dict(IterNet(features=4).state_dict())
    assert str(raised.value).startswith(
        "the weights are for IterNet(features=4, iterations=3, depth=2) but the network is IterNet(features=8,"
    )
    try:
        raise RuntimeError("a config item failed") from raised.value  # as MONAI wraps it
    except RuntimeError as wrapped:
        found = find_input_error(wrapped)
    assert isinstance(found, InputError) and str(found) == str(raised.value)


PROBE = """
import sys
from iternet_monai.networks import IterNet
try:
    IterNet(features=8).load_state_dict(IterNet(features=4).state_dict())
except ValueError:
    pass
print(sorted(name for name in sys.modules if name.startswith("iternet_monai")))
"""


def test_the_network_imports_no_application_code_even_to_refuse_weights():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(["iternet_monai", "iternet_monai.networks", "iternet_monai.networks.iternet"])
