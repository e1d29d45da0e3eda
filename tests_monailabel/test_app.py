"""The app's inference task follows the weights file: weights of another width copied in are the network of the next
inference, and unusable weights are refused with 503 naming the file (without a server: the server test replays
the same over HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi import HTTPException

from iternet_monai.apps.monailabel.app import VesselInferTask
from iternet_monai.apps.monailabel.server import setup_app
from iternet_monai.networks import IterNet

REPO = Path(__file__).resolve().parents[1]


def save_iternet(path: Path, features: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(features)
    state = {k: v.half() for k, v in IterNet(features=features).state_dict().items()}
    torch.save(state, path)
    return state


def assert_serves(network: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    served = network.state_dict()
    assert served.keys() == state.keys()
    assert all(torch.equal(served[k], state[k].float()) for k in state)


def test_the_network_follows_the_weights_file_and_unusable_weights_are_refused_naming_it(tmp_path):
    bundle = setup_app(tmp_path / "app", REPO / "bundles" / "iternet") / "model" / "iternet"
    weights = bundle / "models" / "model.pt"
    first = save_iternet(weights, 4)
    task = VesselInferTask(str(bundle), {})
    assert_serves(task._get_network("cpu", None), first)

    for features in (8, 16):
        state = save_iternet(weights, features)
        assert_serves(task._get_network("cpu", None), state)

    unusable = {"not a readable PyTorch checkpoint": b"these are not weights", "not IterNet weights": None}
    for reason, content in unusable.items():
        if content is None:
            torch.save(torch.nn.Conv2d(3, 1, 3).state_dict(), weights)
        else:
            weights.write_bytes(content)
        with pytest.raises(HTTPException) as refused:
            task._get_network("cpu", None)
        assert refused.value.status_code == 503
        assert str(weights) in refused.value.detail and reason in refused.value.detail

    state = save_iternet(weights, 8)
    assert_serves(task._get_network("cpu", None), state)
