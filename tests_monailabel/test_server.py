"""Integration test against a real MONAI Label 0.8.5 server (``tox -e monailabel``): the app of ``label-app`` with
the bundle, and 3D Slicer's requests replayed over REST: next sample, inference, a label saved as Slicer writes it
(NIfTI), training with Slicer's exact request body, inference with the new weights; bad requests; nothing lost;
weights copied in while the server runs; other requests answered during an inference."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from PIL import Image

from iternet_monai.apps.monailabel.server import convert_studies, server_command, setup_app
from iternet_monai.inferers.inferer import PAPER_OVERLAP
from iternet_monai.networks import IterNet

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ITERNET_SHARED_DATA", REPO.parent / "shared" / "data"))
IMAGES = ("21_training", "22_training", "23_training")

pytestmark = pytest.mark.slow  # a real server


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
    """A small network (random weights: the test checks the plumbing, not the segmentation) for a CPU test."""
    for name in ("train.json", "inference.json"):
        path = bundle / "configs" / name
        config = json.loads(path.read_text())
        config["network_def"]["features"] = 4
        path.write_text(json.dumps(config, indent=1))
    torch.manual_seed(0)
    torch.save({k: v.half() for k, v in IterNet(features=4).state_dict().items()}, bundle / "models" / "model.pt")


def slicer_label(truth: np.ndarray) -> bytes:
    """A labelmap as 3D Slicer saves it for a photograph: NIfTI (W, H, 1), int16, LPS flipped to RAS, vessel 1."""
    image = nib.Nifti1Image(truth.T[:, :, None].astype(np.int16), np.diag([-1.0, -1.0, 1.0, 1.0]))
    return gzip.compress(image.to_bytes())


def slicer_params(config: dict) -> dict:
    """What Slicer's options panel sends: every option's default, the first choice of a list."""
    return {key: value[0] if isinstance(value, list) and value else value for key, value in config.items()}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = drive()
    tmp = tmp_path_factory.mktemp("monailabel")
    app = setup_app(tmp / "app", REPO / "bundles" / "iternet")
    bundle = app / "model" / "iternet"
    small_bundle(bundle)
    raw = tmp / "raw"
    raw.mkdir()
    for stem in IMAGES:
        shutil.copy(data / "training" / "images" / f"{stem}.tif", raw)
    convert_studies(raw, tmp / "studies")
    port = free_port()
    log_path = tmp / "server.log"
    log = open(log_path, "w")
    process = subprocess.Popen(server_command(app, tmp / "studies", port), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"MONAI Label exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(1)
    else:
        process.kill()
        pytest.fail(f"MONAI Label did not answer in 180 s:\n{log_path.read_text()[-4000:]}")
    yield url, bundle, data, process, log_path
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def test_info_lists_a_2d_vessel_model_with_one_mode_and_overlap(server):
    url, *_ = server
    info = requests.get(f"{url}/info/", timeout=30).json()
    model = info["models"]["iternet"]
    assert model["dimension"] == 2
    assert model["labels"] == {"vessel": 1}
    assert model["config"]["mode"] == "auto" and model["config"]["sw_overlap"] == PAPER_OVERLAP
    assert model["config"]["tta"] is False
    assert info["trainers"]["iternet"]["config"]["model_filename"] == ["model.pt"]


def test_slicer_flow_next_sample_infer_save_a_nifti_label_train_once_and_infer_with_the_new_weights(server):
    url, bundle, data, _, log_path = server
    sample = requests.post(f"{url}/activelearning/first", json={}, timeout=60)
    assert sample.status_code == 200, sample.text[:2000]
    assert sample.json()["id"] in IMAGES

    response = requests.post(f"{url}/infer/iternet?image={IMAGES[0]}&output=image", timeout=300)
    assert response.status_code == 200, response.text[:2000]
    label = Image.open(io.BytesIO(response.content))
    assert label.size == (565, 584)
    assert set(np.unique(np.asarray(label)).tolist()) <= {0, 1}

    for stem in IMAGES:
        truth = np.asarray(Image.open(data / "training" / "1st_manual" / f"{stem[:2]}_manual1.gif")) > 0
        response = requests.put(
            f"{url}/datastore/label?image={stem}&tag=final",
            files={"label": ("label.nii.gz", slicer_label(truth), "application/octet-stream")},
            data={"params": json.dumps({"label_info": [{"name": "vessel", "idx": 1}]})},
            timeout=60,
        )
        assert response.status_code == 200, response.text[:2000]
    labels = requests.get(f"{url}/datastore/?output=all", timeout=30).json()
    assert all("final" in labels["objects"][stem]["labels"] for stem in IMAGES)

    models = bundle / "models"
    before = torch.load(models / "model.pt", weights_only=True)
    runs_before = log_path.read_text().count("training run run-")
    config = requests.get(f"{url}/info/", timeout=30).json()["trainers"]["iternet"]["config"]
    body = slicer_params(config)
    assert body["run_id"] == "" and body["max_epochs"] == 50  # what Slicer sends
    body["device"] = "cpu"
    response = requests.post(f"{url}/train/iternet?run_sync=true", json=body, timeout=1200)
    assert response.status_code == 200, response.text[:2000]
    log = log_path.read_text()
    assert log.count("training run run-") == runs_before + 1, log[-4000:]  # one Train press, one training
    assert "Traceback" not in log[log.index("training run run-") :], log[-4000:]

    stats = requests.get(f"{url}/info/", timeout=30).json()["train_stats"]["iternet"]
    assert stats["epoch"] == stats["total_epochs"] == 50 and "total_time" in stats
    # the dated copy of the earlier model.pt (model_20260114-093012.pt), not the bundle's other model
    earlier = [p for p in models.glob("model_*.pt") if re.fullmatch(r"model_\d{8}-\d{6}(_\d+)?\.pt", p.name)]
    assert earlier, sorted(p.name for p in models.iterdir())  # the previous weights are kept
    kept = torch.load(earlier[0], weights_only=True)
    assert all(torch.equal(before[k], kept[k]) for k in before)
    assert not [p for p in models.glob("*.pt") if "checkpoint" in p.name]  # checkpoints stay out of the model list

    response = requests.post(f"{url}/infer/iternet?image={IMAGES[1]}&output=image", timeout=300)
    assert response.status_code == 200, response.text[:2000]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_requests_get_4xx_naming_the_input_and_the_server_keeps_serving(server):
    url, _, data, process, _ = server
    photo = np.asarray(Image.open(data / "training" / "images" / f"{IMAGES[0]}.tif"))

    response = requests.post(f"{url}/infer/iternet?image=no_such_image&output=image", timeout=60)
    assert response.status_code == 404 and "no_such_image" in response.text, response.text[:500]
    uploads = {
        415: ("notes.png", b"not an image"),
        413: ("huge.png", png(np.zeros((4200, 4200, 3), np.uint8))),
    }
    for status, upload in uploads.items():
        response = requests.post(f"{url}/infer/iternet?output=image", files={"file": upload}, timeout=120)
        assert response.status_code == status, (status, response.status_code, response.text[:500])
        assert "tmp" not in response.json()["detail"]  # not the server's temporary file name
    response = requests.post(
        f"{url}/infer/iternet?output=image", files={"file": ("redfree.png", png(photo[..., 1]))}, timeout=120
    )
    assert response.status_code == 415 and "grayscale" in response.text, response.text[:500]

    label = png((photo[..., 1] > 100).astype(np.uint8))
    response = requests.put(f"{url}/datastore/label?image=no_such_image&tag=final", files={"label": ("l.png", label)})
    assert response.status_code == 404 and "no_such_image" in response.text, response.text[:500]
    response = requests.put(
        f"{url}/datastore/label?image={IMAGES[2]}&tag=final", files={"label": ("l.png", b"not an image")}
    )
    assert response.status_code == 415 and IMAGES[2] in response.text, response.text[:500]
    small = png(np.zeros((100, 120), np.uint8))
    response = requests.put(f"{url}/datastore/label?image={IMAGES[2]}&tag=final", files={"label": ("l.png", small)})
    assert response.status_code == 422 and "120x100" in response.text, response.text[:500]

    assert process.poll() is None
    assert requests.get(f"{url}/info/", timeout=30).status_code == 200


def constant_weights(features: int, vessel: bool) -> dict[str, torch.Tensor]:
    """IterNet weights of width ``features`` whose output is the same everywhere: the final head's weights are
    zero and its bias +-10, so every pixel is vessel (``vessel``) or background, whatever the photograph."""
    state = IterNet(features=features).state_dict()
    head = max(k.split(".")[1] for k in state if k.startswith("iterations."))
    state[f"iterations.{head}.head.weight"].zero_()
    state[f"iterations.{head}.head.bias"].fill_(10.0 if vessel else -10.0)
    return state


def infer_label(url: str, image: str) -> requests.Response:
    return requests.post(f"{url}/infer/iternet?image={image}&output=image", timeout=300)


def test_weights_copied_in_while_serving_are_used_whatever_their_shape_and_unusable_ones_are_named(server, tmp_path):
    url, bundle, _, process, _ = server
    weights = bundle / "models" / "model.pt"
    original = weights.read_bytes()
    try:
        assert infer_label(url, IMAGES[0]).status_code == 200  # the network of the weights at start is cached
        for features, vessel in ((8, True), (16, False)):
            torch.save(constant_weights(features, vessel), tmp_path / "new.pt")
            shutil.copyfile(tmp_path / "new.pt", weights)  # as a user copies a file in: in place, not renamed
            response = infer_label(url, IMAGES[0])
            assert response.status_code == 200, (features, response.text[:2000])
            label = np.asarray(Image.open(io.BytesIO(response.content)))
            assert label.shape == (584, 565) and np.all(label == int(vessel)), (features, np.unique(label))

        unusable = {
            "not a readable PyTorch checkpoint": b"these are not weights",
            "not IterNet weights": torch.nn.Conv2d(3, 1, 3).state_dict(),
        }
        for reason, content in unusable.items():
            if isinstance(content, bytes):
                weights.write_bytes(content)
            else:
                torch.save(content, weights)
            response = infer_label(url, IMAGES[0])
            assert 400 <= response.status_code < 600, response.status_code
            detail = response.json()["detail"]
            assert str(weights) in detail and reason in detail, detail
            assert requests.get(f"{url}/info/", timeout=30).status_code == 200

        weights.write_bytes(original)  # a good file copied back is served again, without a restart
        response = infer_label(url, IMAGES[0])
        assert response.status_code == 200, response.text[:2000]
        assert process.poll() is None
    finally:
        weights.write_bytes(original)


def test_info_answers_while_a_slow_inference_runs(server, tmp_path):
    url, _, data, _, _ = server
    # A photograph within the pixel limit that takes seconds on a CPU even with the test's small network.
    photo = Image.open(data / "training" / "images" / f"{IMAGES[0]}.tif").convert("RGB").resize((1600, 1600))
    upload = png(np.asarray(photo))
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        inference = pool.submit(
            requests.post, f"{url}/infer/iternet?output=image", files={"file": ("big.png", upload)}, timeout=600
        )
        time.sleep(2.0)  # the upload is in and the inference under way
        finished_early = inference.done()
        asked = time.monotonic()
        info = requests.get(f"{url}/info/", timeout=600)
        answered = time.monotonic() - asked
        response = inference.result()
    took = time.monotonic() - started
    assert not finished_early, f"the inference took only {took:.1f} s; the test needs a slower one"
    assert info.status_code == 200 and response.status_code == 200, response.text[:2000]
    assert answered < 2.0, f"/info/ took {answered:.1f} s while a {took:.1f} s inference ran"
    assert Image.open(io.BytesIO(response.content)).size == (1600, 1600)
