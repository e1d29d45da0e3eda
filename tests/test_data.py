import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, bad_input_corpus, fundus_like, write_image
from PIL import Image

from iternet_monai.cli import main as cli
from iternet_monai.data import (
    DatalistError,
    builtin_datalist,
    bundle_datalist,
    check_files,
    load_datalist,
    make_datalist,
)

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
    content, _ = make_datalist(tmp_path, "images", "labels", "masks", test=["03_photo"])
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
    assert "images/01_photo.png  label labels/01_manual.gif" in capsys.readouterr().out
    assert len(load_datalist(out, tmp_path, "training")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "labels", "masks", "mine.json"]
    before = out.read_text()
    assert cli(args) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == before
    (tmp_path / "labels" / "02_manual.gif").unlink()
    assert cli(args + ["--overwrite"]) == 2
    assert "02_photo.png: no label file matches" in capsys.readouterr().err and out.read_text() == before


@pytest.mark.parametrize(
    "output, message",
    [
        ("missing/list.json", "missing does not exist"),
        ("images/01_photo.png/list.json", "01_photo.png is not a folder"),
        ("images", "is a folder; give a file name"),
    ],
)
def test_make_datalist_unwritable_output_is_one_line(tmp_path, capsys, output, message):
    make_folder(tmp_path)
    args = ["make-datalist", "--dataset-dir", str(tmp_path), "--output", str(tmp_path / output)]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("iternet-monai: ")


def test_make_datalist_on_the_flat_chase_folder_gives_the_builtin_split(chase):
    builtin = json.loads(Path(builtin_datalist("chase_db1")).read_text())
    test = [Path(item["image"]).stem for item in builtin["testing"]]
    content, notes = make_datalist(chase, test=test)
    assert {k: content[k] for k in ("training", "validation", "testing")} == {
        k: builtin[k] for k in ("training", "validation", "testing")
    }
    assert any("*_1stHO" in line for line in notes)
    assert any("left out 28 files" in line and "_2ndHO" in line for line in notes)


def test_make_datalist_on_drive_folders_gives_the_builtin_lists(drive):
    builtin = json.loads(Path(builtin_datalist("drive")).read_text())
    for split, labels in (("training", "1st_manual"), ("test", "1st_manual")):
        content, _ = make_datalist(drive, f"{split}/images", f"{split}/{labels}", f"{split}/mask")
        key = "testing" if split == "test" else "training"
        assert content["training"] == builtin[key]


def write_flat_chase_like(root: Path, names: list[str]) -> None:
    """CHASE_DB1's flat layout: Image_01L.jpg beside 1-bit Image_01L_1stHO.png and Image_01L_2ndHO.png."""
    for i, name in enumerate(names):
        image, label = fundus_like(seed=i)
        write_image(root / f"{name}.jpg", image)
        Image.fromarray(label > 0).save(root / f"{name}_1stHO.png")
        Image.fromarray(np.roll(label, 1, axis=0) > 0).save(root / f"{name}_2ndHO.png")


def test_make_datalist_command_on_a_flat_folder_pairs_the_first_observer(tmp_path, capsys):
    write_flat_chase_like(tmp_path, ["Image_01L", "Image_01R", "Image_02L"])
    out = tmp_path / "out" / "chase.json"
    out.parent.mkdir()
    cli(["make-datalist", "--dataset-dir", str(tmp_path), "--test", "Image_02L", "--output", str(out)])
    printed = capsys.readouterr().out
    assert "Image_01R.jpg  label Image_01R_1stHO.png" in printed and "Image_01L_2ndHO.png" in printed
    content = json.loads(out.read_text())
    assert content["testing"] == [{"image": "Image_02L.jpg", "label": "Image_02L_1stHO.png"}]
    assert [e["label"] for e in content["training"]] == ["Image_01L_1stHO.png", "Image_01R_1stHO.png"]
    assert len(load_datalist(out, tmp_path, "training", min_size=48)) == 2


def write_pairs(root: Path, images: list[str], labels: list[str]) -> None:
    image, label = fundus_like()
    for name in images:
        write_image(root / name, image)
    for name in labels:
        write_image(root / name, label)


def test_make_datalist_matches_whole_name_parts_not_prefixes(tmp_path):
    write_pairs(tmp_path / "a", ["a_5.png", "a_50.png"], ["a_50_label.png", "a_5_label.png"])
    content, _ = make_datalist(tmp_path / "a", ".")
    assert [(e["image"], e["label"]) for e in content["training"]] == [
        ("a_5.png", "a_5_label.png"),
        ("a_50.png", "a_50_label.png"),
    ]
    write_pairs(tmp_path / "img", ["img1.png", "img10.png"], ["img10_label.png", "img1_label.png"])
    content, _ = make_datalist(tmp_path / "img")
    assert [(e["image"], e["label"]) for e in content["training"]] == [
        ("img1.png", "img1_label.png"),
        ("img10.png", "img10_label.png"),
    ]
    write_pairs(tmp_path / "lone", ["a_5.png"], ["a_50_label.png"])
    with pytest.raises(DatalistError, match=r"a_5\.png: no label file matches it\n.*a_50_label\.png: label file of no"):
        make_datalist(tmp_path / "lone")


def test_make_datalist_with_a_label_pattern_and_separate_folders(tmp_path):
    write_pairs(tmp_path, ["photos/x1.png", "photos/x2.png"], ["x1_annot.png", "x2_annot.png", "notes.png"])
    content, notes = make_datalist(tmp_path, "photos", ".", label_pattern="*_annot.png")
    assert [e["label"] for e in content["training"]] == ["x1_annot.png", "x2_annot.png"]
    with pytest.raises(DatalistError, match="matches the name pattern '\\*_vessel'"):
        make_datalist(tmp_path, "photos", ".", label_pattern="*_vessel")


def test_make_datalist_checks_the_files_it_lists(tmp_path):
    write_flat_chase_like(tmp_path, ["Image_01L", "Image_01R"])
    data = (tmp_path / "Image_01R.jpg").read_bytes()
    (tmp_path / "Image_01R.jpg").write_bytes(data[: len(data) // 2])
    write_image(tmp_path / "Image_01L_1stHO.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatalistError) as err:
        make_datalist(tmp_path)
    assert "Image_01R.jpg: truncated or corrupt image" in str(err.value)
    assert "Image_01L_1stHO.png: label is 10x10 but its image" in str(err.value)


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


def write_datalist(path: Path, content: object) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_every_bad_file_is_named_in_one_pass(tmp_path):
    entries, expected = bad_input_corpus(tmp_path)
    datalist = write_datalist(tmp_path / "list.json", {"training": entries})
    with pytest.raises(DatalistError) as err:
        load_datalist(datalist, tmp_path, "training", min_size=128)
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"{len(expected)} problem(s) with 'training'")
    for name, why in expected.items():
        assert [line for line in lines if line.startswith(f"  {tmp_path / name}: ") and why in line], name
    assert not [line for line in lines if "good.png:" in line or "/label.png:" in line]


def test_check_files_returns_the_good_items_and_one_line_per_bad_file(tmp_path):
    entries, expected = bad_input_corpus(tmp_path)
    items = [{k: str(tmp_path / v) for k, v in entry.items()} for entry in entries]
    good, problems = check_files(items, ("image", "label"), min_size=(128, 128), required=("image", "label"))
    assert good == items[:1]
    assert sorted(Path(line.split(": ")[0]).name for line in problems) == sorted(expected)
    good, problems = check_files(items, ("image",), min_size=1)
    assert {Path(item["image"]).name for item in good} == {"good.png", "tiny.png", "small.png", "full.jpg"}


def test_label_is_optional_in_testing_and_minimum_size_only_where_asked(tmp_path):
    image, _ = fundus_like()
    write_image(tmp_path / "img.png", image)
    datalist = write_datalist(tmp_path / "list.json", {"testing": ["img.png"], "training": ["img.png"]})
    assert load_datalist(datalist, tmp_path, "testing") == [{"image": str(tmp_path / "img.png")}]
    with pytest.raises(DatalistError, match=r"img\.png: no label given for it"):
        load_datalist(datalist, tmp_path, "training")
    with pytest.raises(DatalistError, match=r"img\.png: 64x48 pixels, smaller than the 64x64 needed"):
        load_datalist(datalist, tmp_path, "testing", min_size=(64, 64))


@pytest.mark.parametrize(
    "text, message",
    [
        ("{'training': []", "is not valid JSON"),
        ('["a.png"]', "holds a JSON list, not an object"),
        ('{"training": {"image": "a.png"}}', "no non-empty list 'training'"),
    ],
)
def test_malformed_datalist_is_one_line(tmp_path, text, message):
    (tmp_path / "list.json").write_text(text)
    with pytest.raises(DatalistError, match=message) as err:
        load_datalist(tmp_path / "list.json", tmp_path)
    assert len(str(err.value).splitlines()) == 1


def test_malformed_entries_and_bad_files_are_named_together(tmp_path):
    image, label = fundus_like()
    write_image(tmp_path / "img.png", image)
    entries = [{"image": "img.png", "label": "missing.png"}, 7, {"label": "img.png"}, {"image": "img.png", "label": 3}]
    datalist = write_datalist(tmp_path / "list.json", {"training": entries})
    with pytest.raises(DatalistError) as err:
        load_datalist(datalist, tmp_path)
    message = str(err.value)
    assert message.startswith("4 problem(s)")
    for line in (
        "item 2 of 'training' is a JSON int, not a file name or an object with 'image'",
        "item 3 of 'training' has no 'image'",
        "item 4 of 'training' has a 'label' that is not a file name",
        "missing.png: missing",
    ):
        assert line in message


def test_a_datalist_without_validation_trains_without_it(one_item, caplog):
    root, datalist = one_item
    with pytest.raises(DatalistError, match="no non-empty list 'validation'"):
        load_datalist(datalist, root, "validation")
    with caplog.at_level(logging.INFO):
        assert bundle_datalist(datalist, root, "validation") == []
    assert "has no 'validation' list: training without validation" in caplog.text
    with pytest.raises(DatalistError, match="no non-empty list 'testing'"):
        bundle_datalist(datalist, root, "testing")


def test_builtin_datalists_load_and_check(drive, chase):
    for name, root in (("drive", drive), ("chase_db1", chase), ("chase_db1_oliveira_fov", chase)):
        for key in ("training", "validation", "testing"):
            assert load_datalist(builtin_datalist(name), root, key, min_size=128)


def test_one_stem_matcher_ranks_tiers_and_reports_ties():
    """pair_by_stem: a file counts for the stems it claims; only the best tier of a stem's candidates counts (a tie
    there is not broken by a worse tier), and a tie at the best rank leaves the stem unmatched with the tier's
    candidates, best first."""
    from iternet_monai.data import pair_by_stem

    rank = {
        "a_x.png": (1, 0), "a.png": (0, 5),
        "b_x.png": (0, 1), "b_y.png": (0, 1),
        "c_1.png": (0, 2), "c_2.png": (0, 1),
        "e.png": (0, 1), "e.tif": (0, 1), "e_x.png": (1, 0),
    }  # fmt: skip
    files = [Path(name) for name in rank]
    found, unmatched = pair_by_stem(["a", "b", "c", "d", "e"], files, lambda p: [p.name[0]], lambda p, s: rank[p.name])
    assert {stem: path.name for stem, path in found.items()} == {"a": "a.png", "c": "c_2.png"}
    assert {stem: [p.name for p in paths] for stem, paths in unmatched.items()} == {
        "b": ["b_x.png", "b_y.png"],
        "d": [],
        "e": ["e.png", "e.tif"],
    }
