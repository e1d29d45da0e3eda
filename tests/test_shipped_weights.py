"""The shipped weights stay good: each model the bundle ships segments the first two test images of its dataset on the
CPU with a pooled AUC no more than 0.005 below the value recorded when it was shipped (metadata.json), through the
project's own evaluation (``iternet-monai evaluate --ckpt``, one whole-image pass, FoV)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, dataset

BUNDLE = REPO / "iternet_monai" / "bundle"
SHIPPED = json.loads((BUNDLE / "configs" / "metadata.json").read_text()).get("weights") or {}
FOLDERS = {"drive": "DRIVE", "chase_db1": "CHASE_DB1"}
TOLERANCE = 0.005


def test_the_default_model_is_shipped_with_its_record():
    """The README's main command needs ``models/model.pt``; its sha256 is the one metadata.json records."""
    import hashlib

    assert "models/model.pt" in SHIPPED, "metadata.json records no models/model.pt"
    for file, entry in SHIPPED.items():
        assert hashlib.sha256((BUNDLE / file).read_bytes()).hexdigest() == entry["sha256"], file


@pytest.mark.parametrize("file", sorted(SHIPPED))
def test_shipped_weights_segment_two_test_images_as_well_as_when_shipped(file, tmp_path):
    entry = SHIPPED[file]
    check = entry["check"]
    folder = dataset(FOLDERS[entry["dataset"]])
    datalist = tmp_path / "two.json"
    testing = json.loads((REPO / "iternet_monai" / "data" / "datalists" / f"{entry['dataset']}.json").read_text())
    testing = testing["testing"]
    datalist.write_text(json.dumps({"testing": [item for item in testing if item["image"] in check["images"]]}))
    weights = [] if file == "models/model.pt" else [str(BUNDLE / file)]  # the default model with no path given
    command = [
        sys.executable, "-m", "iternet_monai.cli", "evaluate", "--datalist", str(datalist), "--dataset-dir",
        str(folder), "--mode", "whole_image", "--device", "cpu", "--output", str(tmp_path / "scores"), "--ckpt",
        *weights,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    assert scores["protocol"]["images"] == len(check["images"]) == 2
    assert scores["pooled"]["auc"] >= check["auc"] - TOLERANCE, (file, scores["pooled"]["auc"], check["auc"])


@pytest.mark.parametrize("file", sorted(SHIPPED))
def test_onnxruntime_gives_pytorchs_output_with_the_shipped_weights(file, drive, tmp_path):
    """The CPU default (ONNX Runtime) may only be faster, not different: within 1e-4 of PyTorch on a DRIVE photo."""
    import torch
    from monai.transforms import Compose

    from iternet_monai.engines.checkpoints import iternet_for_weights
    from iternet_monai.inferers.inferer import OnnxRuntimeNetwork
    from iternet_monai.transforms.fundus import fundus_loading

    image = Compose(fundus_loading(["image"]))({"image": str(drive / "test" / "images" / "01_test.tif")})["image"]
    photo = torch.nn.functional.pad(image[None].as_tensor(), (0, -584 % 16, 0, -565 % 16))
    network = iternet_for_weights(BUNDLE / file).eval()
    with torch.no_grad():
        eager = network(photo)
    runtime = OnnxRuntimeNetwork(network, cache_dir=tmp_path)(photo)
    assert (runtime - eager).abs().max() < 1e-4
