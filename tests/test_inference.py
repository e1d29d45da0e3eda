import shutil

import numpy as np
import pytest
import torch
from conftest import fundus_like, write_image
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose
from PIL import Image
from test_bundle import bundle

from iternet_monai.inference import segment_files
from iternet_monai.inferers import WholeImageInferer, make_inferer, resolve_mode, sliding_window_count
from iternet_monai.networks import IterNet
from iternet_monai.transforms import fundus_loading

SMALL = ["--network_def#features", "4", "--ckpt_path", "none"]


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


def test_whole_image_pads_to_16_and_crops_back_and_channels_last_changes_nothing():
    net = IterNet(features=4).eval()
    image = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        out = WholeImageInferer()(image, net)
        plain = net(torch.nn.functional.pad(image, (0, 14, 0, 11)))[..., :37, :50]
    assert out.shape == (1, 1, 37, 50)
    assert torch.allclose(out, plain, atol=1e-5)


@pytest.mark.slow
def test_bundle_inference_on_a_drive_image_writes_every_output(drive, tmp_path):
    shutil.copy(drive / "test" / "images" / "01_test.tif", tmp_path / "01_test.tif")
    out = tmp_path / "out"
    result = bundle(
        "run",
        "--config_file",
        "bundles/iternet/inference.json",
        "--dataset_dir",
        str(tmp_path),
        "--output_dir",
        str(out),
        "--nifti",
        "true",
        *SMALL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "inference mode: whole_image" in result.stdout + result.stderr
    assert "UNTRAINED" in result.stdout + result.stderr
    for name in ("01_test_prob.png", "01_test_mask.png", "01_test_overlay.png"):
        assert Image.open(out / name).size == (565, 584), name
    assert set(np.unique(np.asarray(Image.open(out / "01_test_mask.png")))) <= {0, 255}
    import nibabel as nib

    assert nib.load(str(out / "01_test_prob.nii.gz")).shape[:2] == (565, 584)


@pytest.mark.slow
def test_embedded_default_runs(tmp_path):
    result = bundle("run", "--config_file", "bundles/iternet/inference.json", "--output_dir", str(tmp_path), *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(tmp_path / "skimage_retina_overlay.png").size == (1411, 1411)


def folder_with_bad_files(root):
    image, _ = fundus_like(48, 64)
    write_image(root / "good.png", image)
    write_image(root / "rgba.png", np.concatenate([image, np.full((48, 64, 1), 200, np.uint8)], axis=-1))
    write_image(root / "gray.png", image[..., 1])
    Image.fromarray(image[..., 1].astype(np.uint16) * 257).save(root / "gray16.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG but not really")
    return root


def run(root, out, overwrite=False):
    items = [{"image": str(p)} for p in sorted(root.glob("*.png"))]
    return segment_files(
        items, Compose(fundus_loading(["image"])), IterNet(features=4), WholeImageInferer(), out, overwrite=overwrite
    )


def test_unreadable_files_are_reported_and_skipped_and_the_rest_written(tmp_path, caplog):
    root = folder_with_bad_files(tmp_path / "in")
    with pytest.raises(SystemExit) as stop:
        run(root, tmp_path / "out")
    summary = str(stop.value.code)
    assert summary.startswith("3 of 5 image(s) failed")
    assert "gray.png: a grayscale image" in summary and "gray16.png: a grayscale image" in summary
    assert "corrupt.png" in summary
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(f"{s}_{k}.png" for s in ("good", "rgba") for k in ("prob", "mask", "overlay"))
    assert Image.open(tmp_path / "out" / "rgba_prob.png").size == (64, 48)


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, caplog):
    image, _ = fundus_like(48, 64)
    write_image(tmp_path / "in" / "good.png", image)
    run(tmp_path / "in", tmp_path / "out")
    target = tmp_path / "out" / "good_prob.png"
    target.write_bytes(b"user's own file")
    assert run(tmp_path / "in", tmp_path / "out") == []
    assert target.read_bytes() == b"user's own file"
    assert "skipped 1 image(s) whose outputs exist" in caplog.text
    assert len(run(tmp_path / "in", tmp_path / "out", overwrite=True)) == 1
    assert Image.open(target).size == (64, 48)


@pytest.mark.slow
def test_bundle_exits_non_zero_with_a_summary_of_failures(tmp_path):
    root = folder_with_bad_files(tmp_path / "in")
    result = bundle(
        "run",
        "--config_file",
        "bundles/iternet/inference.json",
        "--dataset_dir",
        str(root),
        "--output_dir",
        str(tmp_path / "out"),
        *SMALL,
    )
    assert result.returncode != 0
    assert "3 of 5 image(s) failed" in result.stderr
    assert (tmp_path / "out" / "good_overlay.png").is_file()
