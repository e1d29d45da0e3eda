"""Helpers of the inference tests: the bundle's inference run in this process, small float16 weights, a slow network
that records the progress bars, a folder of bad photographs."""

import os
import time

import numpy as np
import torch
from conftest import fundus_like, write_image
from monai.bundle import run as bundle_run
from PIL import Image

from iternet_monai.networks import IterNet

INFERENCE = "bundles/iternet/inference.json"


def folder_with_bad_files(root):
    image, _ = fundus_like(48, 64)
    write_image(root / "good.png", image)
    write_image(root / "rgba.png", np.concatenate([image, np.full((48, 64, 1), 200, np.uint8)], axis=-1))
    write_image(root / "gray.png", image[..., 1])
    Image.fromarray(image[..., 1].astype(np.uint16) * 257).save(root / "gray16.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG but not really")
    (root / "empty.jpg").write_bytes(b"")
    good = (root / "good.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    os.symlink(root / "no_such_file.png", root / "dangling.png")
    return root


def small_fp16_weights(tmp_path):
    """float16 weights of a small IterNet, as the shipped model.pt is stored."""
    torch.manual_seed(0)
    net = IterNet(features=4).eval()
    path = tmp_path / "small_fp16.pt"
    torch.save({k: v.half() for k, v in net.state_dict().items()}, path)
    net.load_state_dict({k: v.half().float() for k, v in net.state_dict().items()})
    return path, net


def run_inference(**overrides):
    """The bundle's inference in this process. An untrained network is the same in every run (seeded), so the ONNX
    Runtime backend exports it once in a test session, not once per run."""
    torch.manual_seed(0)
    bundle_run(run_id="run", config_file=INFERENCE, logging_file=False, **overrides)


class SlowNetwork(torch.nn.Module):
    """A network that takes ``seconds`` per call, as a real one does, and records what the progress bars had
    drawn on stderr (``capsys``) when each call began."""

    def __init__(self, capsys, seconds: float = 0.2) -> None:
        super().__init__()
        self.capsys, self.seconds, self.seen, self.drawn = capsys, seconds, [], ""
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.drawn += self.capsys.readouterr().err
        self.seen.append(self.drawn.replace("\r", "\n").splitlines()[-1] if self.drawn else "")
        time.sleep(self.seconds)
        return x[:, :1] + self.weight
