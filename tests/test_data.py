import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, fundus_like, write_image
from monai.transforms import Compose

from iternet_monai.cli import main as cli
from iternet_monai.data import DatalistError, builtin_datalist, load_datalist, make_datalist
from iternet_monai.transforms import FieldOfViewd, RandSaturationd, fundus_loading

STARE_LABELLED = [
    "im0001",
    "im0002",
    "im0003",
    "im0004",
    "im0005",
    "im0044",
    "im0077",
    "im0081",
    "im0082",
    "im0139",
    "im0162",
    "im0163",
    "im0235",
    "im0236",
    "im0239",
    "im0240",
    "im0255",
    "im0291",
    "im0319",
    "im0324",
]


def stems(items):
    return [Path(item["image"]).name.split(".")[0] for item in items]


def test_repo_datalists_are_the_packaged_ones():
    assert (REPO / "datalists" / "drive.json").read_text() == Path(builtin_datalist("drive")).read_text()


def test_drive_datalist_is_the_official_split(drive):
    train = load_datalist(builtin_datalist("drive"), drive, "training")
    test = load_datalist(builtin_datalist("drive"), drive, "testing")
    assert stems(train) == [f"{i}_training" for i in range(21, 41)]
    assert stems(test) == [f"{i:02d}_test" for i in range(1, 21)]
    assert all(Path(item[k]).is_file() for item in train + test for k in ("image", "label", "mask"))
    assert load_datalist(builtin_datalist("drive"), drive, "validation") == train


@pytest.mark.parametrize("name", ["chase_db1", "chase_db1_oliveira_fov"])
def test_chase_datalist_is_first_20_train_last_8_test(chase, name):
    train = load_datalist(builtin_datalist(name), chase, "training")
    test = load_datalist(builtin_datalist(name), chase, "testing")
    ids = [f"Image_{i:02d}{s}" for i in range(1, 15) for s in "LR"]
    assert stems(train) == ids[:20] and stems(test) == ids[20:]
    assert all(Path(item["label"]).name.endswith("_1stHO.png") for item in train + test)
    assert all(("mask" in item) == (name == "chase_db1_oliveira_fov") for item in train + test)


def test_stare_datalist_on_a_tree_of_the_official_archives(tmp_path):
    image, label = fundus_like()
    for stem in STARE_LABELLED:
        write_image(tmp_path / "stare-images" / f"{stem}.ppm", image)
        write_image(tmp_path / "labels-ah" / f"{stem}.ah.ppm", label)
        write_image(tmp_path / "labels-vk" / f"{stem}.vk.ppm", label)
    train = load_datalist(builtin_datalist("stare"), tmp_path, "training")
    test = load_datalist(builtin_datalist("stare"), tmp_path, "testing")
    assert stems(train) == STARE_LABELLED[:16]
    assert stems(test) == ["im0255", "im0291", "im0319", "im0324"]
    assert all(Path(item["label"]).parent.name == "labels-ah" for item in train + test)


def make_folder(root: Path, n: int = 3) -> Path:
    for i in range(n):
        image, label = fundus_like(seed=i)
        write_image(root / "images" / f"{i + 1:02d}_photo.png", image)
        write_image(root / "labels" / f"{i + 1:02d}_manual.gif", label)
        write_image(root / "masks" / f"{i + 1:02d}_photo_mask.png", (image.mean(-1) > 10).astype(np.uint8) * 255)
    return root


def test_make_datalist_matches_labels_and_masks_and_splits(tmp_path):
    make_folder(tmp_path)
    content = make_datalist(tmp_path, "images", "labels", "masks", test=["03_photo"])
    assert [e["label"] for e in content["training"]] == ["labels/01_manual.gif", "labels/02_manual.gif"]
    assert content["testing"] == [
        {"image": "images/03_photo.png", "label": "labels/03_manual.gif", "mask": "masks/03_photo_mask.png"}
    ]
    assert content["validation"] == content["training"]


def test_make_datalist_command_writes_and_refuses_to_overwrite(tmp_path, capsys):
    make_folder(tmp_path)
    out = tmp_path / "mine.json"
    args = ["make-datalist", "--dataset-dir", str(tmp_path), "--labels", "labels", "--output", str(out)]
    assert cli(args) == 0
    assert len(load_datalist(out, tmp_path, "training")) == 3
    before = out.read_text()
    assert cli(args) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == before
    (tmp_path / "labels" / "02_manual.gif").unlink()
    assert cli(args + ["--overwrite"]) == 2
    assert "02_photo.png: no label file matches" in capsys.readouterr().err


@pytest.fixture
def one_item(tmp_path):
    image, label = fundus_like()
    write_image(tmp_path / "img.png", image)
    write_image(tmp_path / "lab.png", label)
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"training": [{"image": "img.png", "label": "lab.png"}]}))
    return tmp_path, datalist


def test_missing_dataset_folder_and_datalist_are_named(one_item, tmp_path):
    root, datalist = one_item
    with pytest.raises(DatalistError, match="--dataset_dir"):
        load_datalist(datalist, None)
    with pytest.raises(DatalistError, match="nowhere does not exist"):
        load_datalist(datalist, tmp_path / "nowhere")
    with pytest.raises(DatalistError, match="other.json does not exist"):
        load_datalist(tmp_path / "other.json", root)
    with pytest.raises(DatalistError, match="no non-empty list 'testing'.*training"):
        load_datalist(datalist, root, "testing")


def test_missing_file_is_named(one_item):
    root, datalist = one_item
    (root / "lab.png").unlink()
    with pytest.raises(DatalistError, match=r"lab\.png: missing"):
        load_datalist(datalist, root)


def test_corrupt_image_is_named(one_item):
    root, datalist = one_item
    (root / "img.png").write_bytes(b"not an image at all")
    with pytest.raises(DatalistError, match=r"img\.png: not a readable image"):
        load_datalist(datalist, root)


def test_label_of_another_size_is_named(one_item):
    root, datalist = one_item
    write_image(root / "lab.png", np.zeros((40, 64), np.uint8))
    with pytest.raises(DatalistError, match=r"lab\.png: label is 64x40 but its image .*img\.png is 64x48"):
        load_datalist(datalist, root)


def test_grayscale_image_is_named(one_item):
    root, datalist = one_item
    write_image(root / "img.png", np.zeros((48, 64), np.uint8))
    with pytest.raises(DatalistError, match=r"img\.png: grayscale image"):
        load_datalist(datalist, root)


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


def test_drive_gif_labels_palette_second_observer_and_rgba(drive, tmp_path):
    first = load(
        {"image": str(drive / "test/images/01_test.tif"), "label": str(drive / "test/1st_manual/01_manual1.gif")}
    )
    second = load(
        {"image": str(drive / "test/images/01_test.tif"), "label": str(drive / "test/2nd_manual/01_manual2.gif")}
    )
    assert first["image"].shape == (3, 565, 584) and first["label"].shape == (1, 565, 584)
    for label in (first["label"], second["label"]):
        values = torch.unique(label)
        assert len(values) == 2 and values[0] < values[1]
    rgba = np.concatenate([fundus_like()[0], np.full((48, 64, 1), 255, np.uint8)], axis=-1)
    write_image(tmp_path / "rgba.png", rgba)
    assert load({"image": str(tmp_path / "rgba.png")})["image"].shape == (3, 64, 48)


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
