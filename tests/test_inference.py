"""Inference: the bundle's one pipeline (inference.json) on real DRIVE images, run as a user runs it."""

import io
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, bundle, fundus_like, two_drive_images, write_image
from inference_helpers import INFERENCE, folder_with_bad_files, run_inference, small_fp16_weights
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose
from PIL import Image

from iternet_monai.engines.checkpoints import BUNDLE_DIR, CheckpointError
from iternet_monai.engines.inference import load_pipeline
from iternet_monai.inferers.inferer import (
    FlipAveragingInferer,
    WholeImageInferer,
)
from iternet_monai.transforms.fundus import fundus_loading
from iternet_monai.utils.errors import find_input_error, hide_empty_input_summary


@pytest.fixture
def small_weights(tmp_path):
    return small_fp16_weights(tmp_path)


def test_one_pipeline_writes_the_probability_mask_overlay_and_nifti_of_a_drive_image(drive, tmp_path, small_weights):
    weights, net = small_weights
    shutil.copy(drive / "test" / "images" / "01_test.tif", tmp_path / "01_test.tif")
    out = tmp_path / "out"
    # the weights define the network: the config's network_def says features 32, the file holds features 4
    run_inference(dataset_dir=str(tmp_path), output_dir=str(out), ckpt_path=str(weights), nifti=True)
    photo = Compose(fundus_loading(["image"]))({"image": str(tmp_path / "01_test.tif")})["image"]
    with torch.no_grad():
        expected = torch.sigmoid(WholeImageInferer()(photo[None].as_tensor(), net))[0, 0].numpy().T  # (H, W)
    prob = np.asarray(Image.open(out / "01_test_prob.png")) / 255.0
    assert prob.shape == (584, 565)
    assert np.abs(prob - expected).max() <= 0.5 / 255 + 1e-4
    mask = np.asarray(Image.open(out / "01_test_mask.png"))
    assert set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask > 0, expected >= 0.5)
    assert np.asarray(Image.open(out / "01_test_overlay.png")).shape == (584, 565, 3)
    import nibabel as nib

    nifti = np.asarray(nib.load(str(out / "01_test_prob.nii.gz")).dataobj)
    assert nifti.shape == (565, 584, 1) and np.abs(nifti[..., 0].T - expected).max() < 1e-5


def test_preprocessing_checks_the_photograph_then_loads_it_scaled_to_one(tmp_path):
    photo = write_image(tmp_path / "a.png", fundus_like(48, 64)[0])
    preprocessing = load_pipeline().get_parsed_content("preprocessing")
    image = preprocessing({"image": str(photo)})["image"]
    expected = np.asarray(Image.open(photo), np.float32).transpose(2, 1, 0) / 255  # channel-first, (W, H) as MONAI
    assert np.allclose(image.numpy(), expected, atol=1e-6)
    write_image(tmp_path / "tiny.png", fundus_like(48, 64)[0][:4, :4])
    with pytest.raises(RuntimeError) as raised:  # MONAI wraps the error of a transform
        preprocessing({"image": str(tmp_path / "tiny.png")})
    assert str(find_input_error(raised.value)) == "tiny.png: 4x4 pixels, smaller than the 16x16 needed"


def test_true_and_false_words_choose_the_pipeline():
    """The command line passes true/false keys as strings (Python Fire): "false" must mean false, and a word that is
    neither is an input error naming the key."""
    assert type(load_pipeline(tta="false", mode="whole_image").get_parsed_content("inferer")) is WholeImageInferer
    assert type(load_pipeline(tta="On", mode="whole_image").get_parsed_content("inferer")) is FlipAveragingInferer
    with pytest.raises(Exception) as raised:  # noqa: B017 - MONAI wraps the error of a config item it builds
        load_pipeline(tta="maybe", mode="whole_image").get_parsed_content("inferer")
    message = "--tta 'maybe' is neither true nor false; pass --tta true or --tta false"
    assert str(find_input_error(raised.value)) == message


@pytest.mark.slow
def test_true_and_false_are_read_as_the_command_line_gives_them(tmp_path):
    """``python -m monai.bundle run ... --allow_untrained false`` passes the string "false" (Python Fire), which
    Python takes for true: it must mean false, and a word that is neither is one line naming the key."""
    image, _ = fundus_like(48, 64)
    write_image(tmp_path / "in" / "a.png", image)
    out = tmp_path / "out"
    common = ["run", "--config_file", INFERENCE, "--network_def#features", "4", "--dataset_dir", str(tmp_path / "in")]
    common += ["--ckpt_path", "none"]  # no weights, not the bundle's shipped ones
    said_false = bundle(*common, "--output_dir", str(out), "--allow_untrained", "false")
    assert said_false.returncode == 0 and not out.exists(), said_false.stderr[-2000:]
    assert bundle(*common, "--output_dir", str(out), "--allow_untrained", "TRUE").returncode == 0
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert sorted(written) == ["a_mask.png", "a_overlay.png", "a_prob.png"]
    kept = bundle(*common, "--output_dir", str(out), "--allow_untrained", "yes", "--overwrite", "false")
    assert kept.returncode == 0 and {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == written
    unclear = bundle(*common, "--output_dir", str(out), "--tta", "maybe")
    assert unclear.returncode != 0 and unclear.stderr.strip().splitlines()[-1] == (
        "iternet: --tta 'maybe' is neither true nor false; pass --tta true or --tta false"
    )


def test_the_pipeline_objects_are_shared_with_evaluation(small_weights):
    weights, net = small_weights
    parser = load_pipeline(ckpt_path=str(weights), mode="sliding_window", sw_overlap=0.5, tta=True, backend="pytorch")
    inferer, network = parser.get_parsed_content("inferer"), parser.get_parsed_content("network")
    assert isinstance(inferer, FlipAveragingInferer) and isinstance(inferer.inferer, SlidingWindowInferer)
    assert network.head.weight.shape[1] == 4
    assert torch.equal(network.head.weight.cpu(), net.head.weight)


def network_error(**overrides) -> str:
    """The one-line CheckpointError that building the pipeline's network raises (MONAI wraps it)."""
    with pytest.raises(RuntimeError) as raised:
        load_pipeline(**overrides).get_parsed_content("network")
    found = find_input_error(raised.value)
    assert isinstance(found, CheckpointError), raised.value
    return str(found)


def test_a_missing_or_foreign_checkpoint_fails_naming_it(tmp_path):
    assert (
        network_error(ckpt_path=str(tmp_path / "no_such.pt")) == f"{tmp_path / 'no_such.pt'}: no such checkpoint file"
    )
    (tmp_path / "notes.pt").write_text("hello")
    assert network_error(ckpt_path=str(tmp_path / "notes.pt")).startswith(
        f"{tmp_path / 'notes.pt'}: not a readable PyTorch checkpoint"
    )
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    assert "other.pt: not IterNet weights" in network_error(ckpt_path=str(tmp_path / "other.pt"))
    (tmp_path / "empty.pt").write_bytes(b"")
    assert network_error(ckpt_path=str(tmp_path / "empty.pt")).endswith("the file is empty (an interrupted write?)")


@pytest.mark.slow
def test_bundle_command_reports_bad_files_and_a_mistyped_checkpoint_in_one_line_each(tmp_path, small_weights):
    weights, _ = small_weights
    root = folder_with_bad_files(tmp_path / "in")
    out = tmp_path / "out"
    result = bundle(
        "run", "--config_file", INFERENCE, "--dataset_dir", str(root), "--output_dir", str(out),
        "--ckpt_path", str(weights),
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "6 of 8 image(s) could not be segmented" in result.stderr
    assert (out / "good_overlay.png").is_file() and (out / "rgba_prob.png").is_file()
    result = bundle(
        "run", "--config_file", INFERENCE, "--dataset_dir", str(root), "--output_dir", str(tmp_path / "out2"),
        "--ckpt_path", str(tmp_path / "modle.pt"),
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"iternet: {tmp_path / 'modle.pt'}: no such checkpoint file"
    assert not (tmp_path / "out2").exists()


@pytest.mark.slow
def test_readme_main_command_runs_from_any_folder_and_says_what_it_did(tmp_path):
    """Run from an unrelated folder: the bundle's own weights are found (or their absence said plainly)."""
    result = bundle("run", "--config_file", str(REPO / INFERENCE), cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "inference mode: whole_image" in log
    if (BUNDLE_DIR / "models" / "model.pt").is_file():
        assert f"loaded weights from {BUNDLE_DIR / 'models' / 'model.pt'}" in log
        assert Image.open(tmp_path / "predictions" / "skimage_retina_overlay.png").size == (1411, 1411)
    else:
        assert "wrote nothing" in log and not (tmp_path / "predictions").exists()


@pytest.mark.slow
def test_evaluation_of_a_model_and_of_the_inference_folder_give_the_same_numbers(drive, tmp_path, small_weights):
    """Batch inference and ``evaluate --ckpt`` run the same pipeline: scoring the folder inference wrote (its float
    NIfTI maps, chosen over the 8-bit PNGs) equals scoring the model directly."""
    from iternet_monai.cli import main as cli

    weights, _ = small_weights
    datalist = two_drive_images(drive, tmp_path)
    folder = tmp_path / "maps"
    run_inference(
        dataset_dir=str(drive), datalist=str(datalist), output_dir=str(folder), ckpt_path=str(weights), nifti=True
    )
    common = ["evaluate", "--datalist", str(datalist), "--dataset-dir", str(drive)]
    assert cli([*common, "--predictions", str(folder), "--output", str(tmp_path / "from_maps")]) == 0
    assert cli([*common, "--ckpt", str(weights), "--device", "cpu", "--output", str(tmp_path / "from_model")]) == 0
    from_maps = json.loads((tmp_path / "from_maps" / "metrics.json").read_text())["pooled"]
    from_model = json.loads((tmp_path / "from_model" / "metrics.json").read_text())["pooled"]
    assert from_maps.keys() == from_model.keys()
    for name in from_model:
        assert from_maps[name] == pytest.approx(from_model[name], abs=1e-9, nan_ok=True), name


@pytest.mark.slow
def test_a_successful_run_logs_only_what_a_user_needs(drive, tmp_path):
    """The user's command on two DRIVE photographs, with Python's warnings shown: no "unable to load" line for a
    file that loads, no deprecation warning caused by the bundle's metadata, none of ignite's engine notes, no
    blank line; the progress bar reaches 2 of 2 and the last line says what was written."""
    for stem in ("01_test", "02_test"):
        shutil.copy(drive / "test" / "images" / f"{stem}.tif", tmp_path / f"{stem}.tif")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", INFERENCE, "--dataset_dir", str(tmp_path),
         "--output_dir", str(out), "--allow_untrained", "true", "--network_def#features", "4"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    for noise in ("unable to load", "deprecated", "Engine run", "Epoch["):
        assert noise not in log, noise
    assert "" not in result.stdout.splitlines()
    assert "2/2" in result.stderr.replace("\r", "\n").splitlines()[-1]
    assert result.stdout.splitlines()[-1].endswith(f"wrote the outputs of 2 image(s) to {out}")


def test_an_input_summary_listing_nothing_is_not_printed():
    """MONAI's bundle run prints the overrides it was given between a header and a '---' line: with none, nothing
    at all; with some, the list without the blank lines MONAI adds."""
    from monai.bundle.scripts import _log_input_summary

    hide_empty_input_summary()
    logger, written = logging.getLogger("monai.bundle.scripts"), io.StringIO()
    handler = logging.StreamHandler(written)
    logger.addHandler(handler)
    try:
        _log_input_summary(tag="run", args={})
        assert written.getvalue() == ""
        _log_input_summary(tag="run", args={"dataset_dir": "photos"})
    finally:
        logger.removeHandler(handler)
    lines = written.getvalue().splitlines()
    assert lines == ["--- input summary of monai.bundle.scripts.run ---", "> dataset_dir: 'photos'", "---"]
