"""Inference: the inferers, the inputs of a run, and the bundle's one pipeline (inference.json) on real DRIVE images."""

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO, bundle, fundus_like, two_drive_images, write_image
from monai.bundle import run as bundle_run
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose
from PIL import Image

from iternet_monai.data import InferenceInputs
from iternet_monai.engines.checkpoints import BUNDLE_DIR, CheckpointError
from iternet_monai.engines.inference import load_pipeline
from iternet_monai.inferers.inferer import (
    PAPER_OVERLAP,
    BatchedSlidingWindowInferer,
    FlipAveragingInferer,
    WholeImageInferer,
    make_inferer,
    resolve_mode,
    sliding_window_count,
)
from iternet_monai.networks import IterNet
from iternet_monai.transforms.fundus import fundus_loading
from iternet_monai.utils.errors import InputError, find_input_error, hide_empty_input_summary
from iternet_monai.utils.files import output_source, unique_names

INFERENCE = "bundles/iternet/inference.json"


def test_window_count_of_the_paper_stride():
    assert sliding_window_count(584, 565) == 22_491


def test_auto_mode_is_sliding_window_on_cuda_and_whole_image_on_cpu():
    assert resolve_mode("auto", "cuda:0") == "sliding_window"
    assert resolve_mode("auto", "cpu") == "whole_image"
    assert resolve_mode("sliding_window", "cpu") == "sliding_window"
    with pytest.raises(ValueError, match="unknown inference mode 'fast'"):
        make_inferer("fast")


def test_whole_image_and_windowed_paths_agree_for_a_position_independent_network():
    torch.manual_seed(0)
    pointwise = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1)).eval()
    image = torch.rand(1, 3, 150, 203)
    with torch.no_grad():
        whole = WholeImageInferer()(image, pointwise)
        windowed = SlidingWindowInferer((64, 64), 8, overlap=0.5, mode="constant")(image, pointwise)
        tiled = WholeImageInferer(max_pixels=100 * 100, tile=64)(image, pointwise)
    assert whole.shape == (1, 1, 150, 203)
    assert torch.allclose(whole, windowed, atol=1e-5) and torch.allclose(whole, tiled, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "sw_batch_size"),
    [
        ((1, 3, 200, 170), (64, 64), 0.5, 7),  # the last row and column of windows moved to the edge
        ((2, 3, 131, 140), (128, 128), PAPER_OVERLAP, 64),  # two images; the paper's stride 3
        ((1, 3, 128, 300), (128, 96), 0.25, 3),  # the window as tall as the image; not square
        ((1, 3, 96, 96), (32, 32), 0.5, 1000),  # a regular grid; every window in one batch
    ],
)
def test_batched_sliding_window_gives_monais_result(shape, roi, overlap, sw_batch_size):
    torch.manual_seed(0)
    net = torch.nn.Sequential(IterNet(features=4), torch.nn.Conv2d(1, 2, 1)).eval()  # two position-aware channels
    image = MetaTensor(torch.rand(shape), affine=torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0])))
    with torch.no_grad():
        monai = SlidingWindowInferer(roi, sw_batch_size, overlap, mode="constant")(image, net)
        ours = BatchedSlidingWindowInferer(roi, sw_batch_size, overlap, mode="constant")(image, net)
    assert ours.shape == monai.shape == (shape[0], 2, *shape[2:])
    assert torch.allclose(ours, monai, atol=1e-6, rtol=0)
    assert isinstance(ours, MetaTensor) and torch.equal(ours.affine, monai.affine)


def test_batched_sliding_window_hands_what_it_does_not_cover_to_monai():
    torch.manual_seed(0)
    net = IterNet(features=4).eval()
    image = torch.rand(1, 3, 70, 90)
    for options, data, network in (
        ({"mode": "gaussian"}, image, net),
        ({}, image[..., :40, :], net),  # smaller than the window: MONAI pads it
        ({}, image, lambda x: {"vessel": net(x)}),  # a network that returns a dictionary
    ):
        settings = {"roi_size": (64, 64), "sw_batch_size": 4, "overlap": 0.5, **options}
        torch.manual_seed(1)
        with torch.no_grad():
            monai = SlidingWindowInferer(**settings)(data, network)
            torch.manual_seed(1)
            ours = BatchedSlidingWindowInferer(**settings)(data, network)
        if isinstance(monai, dict):
            assert ours.keys() == monai.keys() and torch.equal(ours["vessel"], monai["vessel"])
        else:
            assert torch.equal(ours, monai)


def test_batched_sliding_window_works_per_row_of_windows_not_per_window():
    """MONAI runs about 26 tensor operations per window (22,491 windows per DRIVE image at stride 3), the batched
    stitching a few per row of windows."""
    image = torch.rand(1, 3, 60, 60)
    windows = sliding_window_count(60, 60, roi=8, overlap=1 - 1 / 8)
    counts = {}
    for inferer in (SlidingWindowInferer, BatchedSlidingWindowInferer):
        with torch.no_grad(), torch.profiler.profile() as profile:
            inferer((8, 8), 512, 1 - 1 / 8, mode="constant")(image, lambda x: x[:, :1] * 2)
        counts[inferer] = sum(event.count for event in profile.key_averages())
    assert windows == 53 * 53 and counts[SlidingWindowInferer] > 10 * windows
    assert counts[BatchedSlidingWindowInferer] < windows / 5


def test_make_inferer_stitching_choices():
    assert type(make_inferer("sliding_window")) is BatchedSlidingWindowInferer
    assert type(make_inferer("sliding_window", stitching="monai", buffer_steps=2)) is SlidingWindowInferer
    with pytest.raises(ValueError, match="buffer_steps is an option of MONAI's stitching"):
        make_inferer("sliding_window", buffer_steps=2)
    with pytest.raises(ValueError, match="unknown stitching 'fast'"):
        make_inferer("sliding_window", stitching="fast")


def test_whole_image_pads_to_16_and_crops_back_and_channels_last_changes_nothing():
    net = IterNet(features=4).eval()
    image = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        out = WholeImageInferer()(image, net)
        plain = net(torch.nn.functional.pad(image, (0, 14, 0, 11)))[..., :37, :50]
    assert out.shape == (1, 1, 37, 50)
    assert torch.allclose(out, plain, atol=1e-5)


def test_flip_averaging_is_the_mean_of_the_four_flipped_passes():
    torch.manual_seed(0)
    net = IterNet(features=4).eval()
    image = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        tta = make_inferer("whole_image", "cpu", tta=True)(image, net)
        passes = [
            net(image),
            net(image.flip(3)).flip(3),
            net(image.flip(2)).flip(2),
            net(image.flip(2).flip(3)).flip(3).flip(2),
        ]
    assert isinstance(make_inferer("whole_image", "cpu", tta=True), FlipAveragingInferer)
    assert torch.allclose(tta, torch.stack(passes).mean(0), atol=1e-6)
    assert not torch.allclose(tta, passes[0], atol=1e-4)  # IterNet is not flip-invariant: averaging changes it


def test_output_names_are_unique_per_input():
    names = unique_names(["a/scan.v1.png", "a/scan.v2.png", "a/scan.png", "a/scan.tif", "b/01.png", "c/01.png"])
    assert len(set(names)) == 6
    assert names[:2] == ["scan.v1", "scan.v2"]
    assert names[2:4] == ["scan_png", "scan_tif"]
    assert unique_names(["x/01_test.tif"]) == ["01_test"]


def test_output_files_are_paired_with_their_image_by_name():
    assert output_source("out/01_test_prob.nii.gz") == ("01_test", "probability")
    assert output_source("21_training_mask.gif") == ("21_training", "mask")
    assert output_source("scan.v1_overlay.png") == ("scan.v1", "overlay")
    assert output_source("01_test.png") == ("01_test", None)
    assert output_source("_mask.png") == ("_mask", None)


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


def test_bad_inputs_are_named_one_line_each_and_the_good_ones_kept(tmp_path, caplog):
    root = folder_with_bad_files(tmp_path / "in")
    with caplog.at_level(logging.WARNING):
        inputs = InferenceInputs(root, tmp_path / "out")
    assert sorted(os.path.basename(item["image"]) for item in inputs.items) == ["good.png", "rgba.png"]
    named = {line.split(":")[0].rsplit("/", 1)[-1] for line in inputs.problems}
    assert named == {"gray.png", "gray16.png", "corrupt.png", "empty.jpg", "truncated.png", "dangling.png"}
    assert all("\n" not in line for line in inputs.problems)
    with pytest.raises(InputError, match="6 of 8 image"):
        inputs.report()


def test_a_folder_segmented_into_itself_leaves_its_outputs_out_and_existing_outputs_are_kept(tmp_path):
    image, _ = fundus_like(48, 64)
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, image)
    write_image(tmp_path / "a_prob.png", image[..., 0])
    write_image(tmp_path / "a_mask.png", image[..., 0])
    write_image(tmp_path / "a_overlay.png", image)
    write_image(tmp_path / "unrelated_mask.png", image)  # a photograph whose name only looks like an output
    inputs = InferenceInputs(tmp_path, tmp_path)
    assert sorted(item["name"] for item in inputs.items) == ["b", "unrelated_mask"]  # a's outputs exist: skipped
    inputs = InferenceInputs(tmp_path, tmp_path, overwrite=True)
    assert sorted(item["name"] for item in inputs.items) == ["a", "b", "unrelated_mask"]


def test_an_image_with_only_some_of_its_outputs_is_segmented_again_and_leftovers_are_removed(tmp_path):
    """A killed run (or a full disk) leaves an image with only its _prob.png, and temporary files: a rerun redoes
    that image, skips the complete one and removes temporary files nothing writes to any more."""
    image, _ = fundus_like(48, 64)
    for name in ("done.png", "half.png"):
        write_image(tmp_path / "in" / name, image)
    out = tmp_path / "out"
    for tag in ("_prob", "_mask", "_overlay"):
        write_image(out / f"done{tag}.png", image)
    write_image(out / "half_prob.png", image[..., 0])
    old, fresh = out / ".half_mask.png.k2j3.partial.png", out / ".half_overlay.png.x8s1.partial.png"
    old.write_bytes(b"half a png")
    fresh.write_bytes(b"being written now")
    os.utime(old, (1, 1))
    inputs = InferenceInputs(tmp_path / "in", out)
    assert [item["name"] for item in inputs.items] == ["half"]
    assert not old.exists() and fresh.exists()
    run_inference(
        dataset_dir=str(tmp_path / "in"), output_dir=str(out), allow_untrained=True, **{"network_def#features": 4}
    )
    assert Image.open(out / "half_mask.png").size == Image.open(out / "half_overlay.png").size == (64, 48)
    assert np.asarray(Image.open(out / "done_mask.png")).shape == (48, 64, 3)  # complete: kept as it was


@pytest.mark.slow
def test_a_photograph_below_the_minimum_size_is_one_line_and_the_others_are_segmented(tmp_path):
    image, _ = fundus_like(48, 64)
    write_image(tmp_path / "in" / "a.png", image[:1, :1])
    write_image(tmp_path / "in" / "b.png", image)
    out = tmp_path / "out"
    result = bundle(
        "run", "--config_file", INFERENCE, "--dataset_dir", str(tmp_path / "in"), "--output_dir", str(out),
        "--allow_untrained", "true", "--network_def#features", "4",
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "1 of 2 image(s) could not be segmented" in result.stderr
    assert f"{tmp_path / 'in' / 'a.png'}: 1x1 pixels, smaller than the 16x16 needed" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["b_mask.png", "b_overlay.png", "b_prob.png"]


@pytest.fixture
def small_weights(tmp_path):
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


def test_an_untrained_network_writes_nothing_unless_asked(tmp_path, caplog):
    image, _ = fundus_like(48, 64)
    write_image(tmp_path / "in" / "a.png", image)
    small = {"network_def#features": 4, "dataset_dir": str(tmp_path / "in"), "output_dir": str(tmp_path / "out")}
    small["ckpt_path"] = "none"  # not the bundle's shipped weights: no weights at all
    with caplog.at_level(logging.WARNING):
        run_inference(**small)
    assert not (tmp_path / "out").exists()
    assert "ran the UNTRAINED network on 1 image(s) to check the pipeline and wrote nothing" in caplog.text
    run_inference(**small, allow_untrained=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_mask.png", "a_overlay.png", "a_prob.png"]


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


def test_measure_turns_photographs_into_the_biomarker_tables_and_refuses_to_replace_them(
    drive, tmp_path, small_weights
):
    weights, _ = small_weights
    shutil.copy(drive / "test" / "images" / "01_test.tif", tmp_path / "01_test.tif")
    out = tmp_path / "out"
    run_inference(dataset_dir=str(tmp_path), output_dir=str(out), ckpt_path=str(weights), measure=True)
    for name in ("biomarkers.csv", "segments.csv", "quality.csv", "columns.json", "cohort.png", "figures/01_test.png"):
        assert (out / name).is_file(), name
    rows = (out / "biomarkers.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("01_test,")
    stamp = (out / "biomarkers.csv").stat().st_mtime_ns
    with pytest.raises(RuntimeError) as raised:
        run_inference(dataset_dir=str(tmp_path), output_dir=str(out), ckpt_path=str(weights), measure=True)
    assert "biomarkers.csv exists" in str(find_input_error(raised.value))
    assert (out / "biomarkers.csv").stat().st_mtime_ns == stamp


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


def test_progress_counts_the_images_as_they_are_done_and_ends_with_the_work(tmp_path, capsys):
    image, _ = fundus_like(48, 64)
    for name in ("a", "b"):
        write_image(tmp_path / "in" / f"{name}.png", image)
    network = SlowNetwork(capsys)
    run_inference(
        dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), allow_untrained=True, network=network
    )
    assert ["0/2" in network.seen[0], "1/2" in network.seen[1]] == [True, True], network.seen
    drawn = (network.drawn + capsys.readouterr().err).replace("\r", "\n").splitlines()
    assert "2/2" in drawn[-1] and sorted(p.name for p in (tmp_path / "out").iterdir())[0] == "a_mask.png"


def test_sliding_window_progress_counts_the_windows(capsys):
    """A 200x200 image in 128x128 windows at stride 64: 3 rows of 3 windows, one row per network call."""
    network = SlowNetwork(capsys, seconds=0.15)
    inferer = BatchedSlidingWindowInferer((128, 128), sw_batch_size=3, overlap=0.5, mode="constant", progress=True)
    inferer(torch.rand(1, 3, 200, 200), network)
    assert ["0/9" in network.seen[0], "3/9" in network.seen[1], "6/9" in network.seen[2]] == [True] * 3, network.seen


def test_a_photograph_too_large_for_one_pass_shows_its_tiles_as_they_are_done(capsys):
    network = SlowNetwork(capsys, seconds=0.15)
    inferer = WholeImageInferer(max_pixels=32 * 32, tile=32, progress=True)  # 64x64: 3x3 tiles of 32 at stride 28
    inferer(torch.rand(1, 3, 64, 64), network)
    assert "0/9" in network.seen[0] and "4/9" in network.seen[4], network.seen
