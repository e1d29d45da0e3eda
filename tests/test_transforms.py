"""The loading transforms: input checks that name the file, labels read by their values, the field of view, the
saturation jitter, NIfTI labels as 3D Slicer writes them."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fundus_like, write_image
from monai.transforms import Compose
from PIL import Image

from iternet_monai.transforms import FieldOfViewd, RandSaturationd, fundus_loading


def load(item):
    return Compose(fundus_loading())(item)


def test_transform_check_names_the_file(tmp_path):
    image, label = fundus_like()
    write_image(tmp_path / "gray.png", image[..., 0])
    write_image(tmp_path / "rgb.png", image)
    write_image(tmp_path / "small.png", label[:40])
    with pytest.raises(RuntimeError) as err:
        load({"image": str(tmp_path / "gray.png")})
    assert "gray.png: a grayscale image" in str(err.value.__cause__)
    with pytest.raises(RuntimeError) as err:
        load({"image": str(tmp_path / "rgb.png"), "label": str(tmp_path / "small.png")})
    assert "small.png: label size" in str(err.value.__cause__)


def as_monai(path: Path) -> np.ndarray:
    """A file's pixel values in MONAI's (width, height) order, read with Pillow alone."""
    return np.asarray(Image.open(path)).T


def test_drive_and_chase_labels_and_masks_are_read_as_binary(drive, chase, caplog):
    files = {
        "test/1st_manual/01_manual1.gif": "L {0, 255}",
        "test/2nd_manual/01_manual2.gif": "P {0, 1} (palette colours 3/253)",
        "test/mask/01_test_mask.gif": "L {0, 255}",
    }
    for name in files:
        item = load({"image": str(drive / "test/images/01_test.tif"), "label": str(drive / name)})
        assert item["image"].shape == (3, 565, 584)
        assert np.array_equal(item["label"][0].numpy(), (as_monai(drive / name) > 0).astype(np.float32)), name
    item = load({"image": str(chase / "Image_01L.jpg"), "label": str(chase / "Image_01L_1stHO.png")})
    assert np.array_equal(item["label"][0].numpy(), as_monai(chase / "Image_01L_1stHO.png").astype(np.float32))
    assert not caplog.records


def test_rgba_photograph_becomes_rgb(tmp_path):
    rgba = np.concatenate([fundus_like()[0], np.full((48, 64, 1), 255, np.uint8)], axis=-1)
    write_image(tmp_path / "rgba.png", rgba)
    assert load({"image": str(tmp_path / "rgba.png")})["image"].shape == (3, 64, 48)


def label_case(case: str) -> tuple[Image.Image, np.ndarray, str | None]:
    """A label file of one kind, the values it must be read as (Pillow's (height, width) order) and the words of
    the warning it must give (None: no warning)."""
    vessels = fundus_like()[1] > 0
    ones = vessels.astype(np.uint8)
    if case == "zero_one":
        return Image.fromarray(ones), vessels, None
    if case == "stray_255":
        stray = ones.copy()
        stray[0, 0] = 255
        return Image.fromarray(stray), vessels | (stray == 255), "a 0/1 file with 1 pixels of other values"
    if case == "empty":
        return Image.fromarray(np.zeros_like(ones)), np.zeros_like(vessels), "label empty"
    if case == "soft":
        soft = ones * 255
        soft[vessels & (np.arange(64)[None] % 2 == 0)] = 128
        return Image.fromarray(soft), soft / 255.0, None
    if case == "palette":
        palette = Image.frombytes("P", (64, 48), ones.tobytes())
        palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
        return palette, vessels, None
    if case == "class_indices":
        classes = ones * 2
        classes[vessels & (np.arange(48)[:, None] < 10)] = 1
        return Image.fromarray(classes), vessels, "more than two values, all below 128"
    raise ValueError(case)


@pytest.mark.parametrize("case", ["zero_one", "stray_255", "empty", "soft", "palette", "class_indices"])
def test_labels_are_read_by_their_values(tmp_path, caplog, case):
    picture, expected, warning = label_case(case)
    picture.save(tmp_path / "label.png")
    write_image(tmp_path / "image.png", fundus_like()[0])
    with caplog.at_level(logging.WARNING):
        label = load({"image": str(tmp_path / "image.png"), "label": str(tmp_path / "label.png")})["label"]
    assert np.allclose(label[0].numpy(), expected.T.astype(np.float32))
    warnings = [r.getMessage() for r in caplog.records]
    if warning is None:
        assert not warnings
    else:
        assert len(warnings) == 1 and warnings[0].startswith(f"{tmp_path / 'label.png'}: ") and warning in warnings[0]


def test_field_of_view_is_kept_or_derived(drive):
    item = load({"image": str(drive / "test/images/01_test.tif"), "mask": str(drive / "test/mask/01_test_mask.gif")})
    official = FieldOfViewd()(item)["mask"]
    assert set(torch.unique(official).tolist()) == {0.0, 1.0}
    derived = FieldOfViewd()({"image": item["image"]})["mask"]
    assert derived.shape == official.shape
    assert (derived != official).float().mean() < 0.01


def test_saturation_jitter_moves_towards_grey_and_clips():
    image = torch.tensor([[[1.0]], [[0.0]], [[0.5]]])
    out = RandSaturationd(factor=0.2, prob=1.0)
    out.set_random_state(0)
    result = out({"image": image})["image"]
    grey = 0.114 * 1.0 + 0.587 * 0.0 + 0.299 * 0.5
    expected = (out.alpha * image + (1 - out.alpha) * grey).clamp(0, 1)
    assert torch.allclose(result, expected) and out.alpha != 1.0


def test_a_nifti_label_as_3d_slicer_writes_it_gives_the_png_label_target(drive, tmp_path):
    """3D Slicer saves the labelmap of a photograph as a (W, H, 1) NIfTI volume (first axis along the width, LPS
    flipped to RAS in the affine), values 0/1; MONAI Label's default upload. It must load as the same training
    target as the same label sent as PNG, pixel for pixel."""
    truth = np.asarray(Image.open(drive / "training" / "1st_manual" / "21_manual1.gif")) > 0  # (H, W)
    write_image(tmp_path / "21.png", truth.astype(np.uint8))
    import nibabel as nib

    nib.save(
        nib.Nifti1Image(truth.T[:, :, None].astype(np.int16), np.diag([-1.0, -1.0, 1.0, 1.0])), tmp_path / "21.nii.gz"
    )
    load = Compose(fundus_loading(("image", "label")))
    image = str(drive / "training" / "images" / "21_training.tif")
    from_png = load({"image": image, "label": str(tmp_path / "21.png")})["label"]
    from_nifti = load({"image": image, "label": str(tmp_path / "21.nii.gz")})["label"]
    assert from_png.shape == from_nifti.shape == (1, 565, 584)
    assert torch.equal(torch.as_tensor(from_png), torch.as_tensor(from_nifti))
    assert torch.equal(torch.as_tensor(from_png)[0].bool(), torch.as_tensor(truth.T))


def test_labels_and_masks_load_with_their_own_reader_and_log_nothing(drive, tmp_path, caplog):
    """GIF/PNG labels and masks are read by PIL and NIfTI labels by Nibabel straight away: no reader is tried
    that fails, so a run's log holds no "unable to load" line for files that load fine."""
    import nibabel as nib

    truth = np.asarray(Image.open(drive / "training" / "1st_manual" / "21_manual1.gif")) > 0
    nib.save(nib.Nifti1Image(truth.T[:, :, None].astype(np.int16), np.eye(4)), tmp_path / "21.nii.gz")
    folder = drive / "training"
    item = {
        "image": str(folder / "images" / "21_training.tif"),
        "label": str(folder / "1st_manual" / "21_manual1.gif"),
        "mask": str(folder / "mask" / "21_training_mask.gif"),
    }
    load = Compose(fundus_loading())
    with caplog.at_level(logging.INFO):
        from_gif = load(item)
        from_nifti = load({**item, "label": str(tmp_path / "21.nii.gz")})
    assert caplog.records == [], caplog.text
    assert torch.equal(torch.as_tensor(from_gif["label"]), torch.as_tensor(from_nifti["label"]))
    assert from_gif["mask"].shape == (1, 565, 584) and set(torch.unique(from_gif["mask"]).tolist()) == {0.0, 1.0}
