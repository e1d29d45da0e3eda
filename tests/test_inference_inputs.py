"""The inputs of a batch inference run: output names, bad files named one line each, existing and partial outputs."""

import logging
import os

import numpy as np
import pytest
from conftest import bundle, fundus_like, write_image
from inference_helpers import INFERENCE, folder_with_bad_files, run_inference
from PIL import Image

from iternet_monai.data import InferenceInputs
from iternet_monai.utils.errors import InputError
from iternet_monai.utils.files import output_source, unique_names


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
