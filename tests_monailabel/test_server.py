"""Integration test against a real MONAI Label 0.8.5 server (``tox -e monailabel``): the bundle in the monaibundle
app, inference, a corrected label through the datastore, one epoch of training, and bad requests."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from iternet_monai.monailabel import convert_studies, server_command, setup_app
from iternet_monai.networks import IterNet

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ITERNET_SHARED_DATA", REPO.parent / "shared" / "data"))
IMAGES = ("21_training", "22_training")


def drive() -> Path:
    path = SHARED_DATA / "DRIVE"
    if not path.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"DRIVE not found at {path}")
        pytest.skip(f"DRIVE not found at {path}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_bundle(bundle: Path) -> None:
    """A small network (random weights: no trained ones exist) and in-process data loading, for a CPU test."""
    for name in ("train.json", "inference.json"):
        path = bundle / "configs" / name
        config = json.loads(path.read_text())
        config["network_def"]["features"] = 4
        config["num_workers"] = 0
        path.write_text(json.dumps(config, indent=1))
    (bundle / "models").mkdir(exist_ok=True)
    torch.manual_seed(0)
    torch.save(IterNet(features=4).state_dict(), bundle / "models" / "model.pt")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = drive()
    tmp = tmp_path_factory.mktemp("monailabel")
    app = setup_app(tmp / "apps", REPO / "bundles" / "iternet")
    bundle = app / "model" / "iternet"
    small_bundle(bundle)
    raw = tmp / "raw"
    raw.mkdir()
    for stem in IMAGES:
        shutil.copy(data / "training" / "images" / f"{stem}.tif", raw)
    convert_studies(raw, tmp / "studies")
    port = free_port()
    log = open(tmp / "server.log", "w")
    process = subprocess.Popen(server_command(app, tmp / "studies", port), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"MONAI Label exited with {process.returncode}:\n{(tmp / 'server.log').read_text()[-4000:]}")
        try:
            if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(1)
    else:
        process.kill()
        pytest.fail(f"MONAI Label did not answer in 180 s:\n{(tmp / 'server.log').read_text()[-4000:]}")
    yield url, bundle, data, process
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def test_info_lists_a_2d_vessel_model(server):
    url, *_ = server
    model = requests.get(f"{url}/info/", timeout=30).json()["models"]["iternet"]
    assert model["dimension"] == 2
    assert model["labels"] == {"vessel": 1}
    assert model["config"]["sw_overlap"] == 0.75 and model["config"]["mode"] == "auto"


def test_infer_returns_a_binary_label_of_the_image_size(server):
    url, *_ = server
    response = requests.post(f"{url}/infer/iternet?image={IMAGES[0]}&output=image", timeout=300)
    assert response.status_code == 200, response.text[:2000]
    label = Image.open(io.BytesIO(response.content))
    assert label.size == (565, 584)
    assert set(np.unique(np.asarray(label)).tolist()) <= {0, 1}


def test_corrected_labels_and_one_epoch_of_training_rewrite_the_model(server):
    url, bundle, data, _ = server
    for stem in IMAGES:
        truth = (np.asarray(Image.open(data / "training" / "1st_manual" / f"{stem[:2]}_manual1.gif")) > 0).astype(
            np.uint8
        )
        buffer = io.BytesIO()
        Image.fromarray(truth).save(buffer, format="PNG")
        response = requests.put(
            f"{url}/datastore/label?image={stem}&tag=final",
            files={"label": (f"{stem}.png", buffer.getvalue(), "image/png")},
            timeout=60,
        )
        assert response.status_code == 200, response.text[:2000]
    labels = requests.get(f"{url}/datastore/?output=all", timeout=30).json()
    assert all("final" in labels["objects"][stem]["labels"] for stem in IMAGES)
    model = bundle / "models" / "model.pt"
    before = torch.load(model, weights_only=True)
    stamp = model.stat().st_mtime
    response = requests.post(
        f"{url}/train/iternet?run_sync=true",
        timeout=900,
        json={"max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False},
    )
    assert response.status_code == 200, response.text[:2000]
    assert model.stat().st_mtime > stamp
    after = torch.load(model, weights_only=True)
    net = IterNet(features=4)
    net.load_state_dict(after)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, tmp_path):
    url, _, _, process = server
    response = requests.post(f"{url}/infer/iternet?image=no_such_image&output=image", timeout=60)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    response = requests.post(
        f"{url}/infer/iternet?output=image", files={"file": ("notes.png", b"not an image")}, timeout=60
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert process.poll() is None
    assert requests.get(f"{url}/info/", timeout=30).status_code == 200


def test_server_stops_by_pid(server):
    *_, process = server
    assert process.pid > 0 and process.poll() is None
