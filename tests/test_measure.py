"""The ``iternet-monai measure`` command end to end on a few files, one of them bad."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, fundus_like, write_image
from PIL import Image

from iternet_monai.biomarkers.quality import photograph_fov
from iternet_monai.cli import main


def read_csv(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_measure_command_writes_tables_dictionary_and_figures(tmp_path, capsys):
    predictions, photos, output = tmp_path / "predictions", tmp_path / "photos", tmp_path / "measured"
    labels = {}
    for seed, stem in enumerate(("a", "b", "c")):
        photo, label = fundus_like(96, 128, seed)
        labels[stem] = (label > 0, photo)
        write_image(photos / f"{stem}.png", photo)
        write_image(predictions / f"{stem}_prob.png", np.where(label > 0, 240, 8).astype(np.uint8))
        write_image(predictions / f"{stem}_overlay.png", photo)  # inference writes these too: not vessel maps
        if stem != "c":
            write_image(predictions / f"{stem}_mask.png", label)
    (predictions / "c_mask.png").write_bytes(b"not a png")

    arguments = ["measure", "--masks", str(predictions), "--probabilities", str(predictions)]
    arguments += ["--images", str(photos), "--mm-per-pixel", "0.02", "--output", str(output)]
    assert main(arguments) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(
        f"iternet-monai: {predictions / 'c_mask.png'}: cannot read the vessel map"
    )

    biomarkers = read_csv(output / "biomarkers.csv")
    assert [row["image"] for row in biomarkers] == ["a", "b"]
    for row in biomarkers:
        label, photo = labels[row["image"]]
        fov = photograph_fov(photo)
        assert int(row["vessel_area_px2"]) == (label & fov).sum()
        assert float(row["vessel_area_mm2"]) == pytest.approx((label & fov).sum() * 0.02**2, rel=1e-5)
    segments = read_csv(output / "segments.csv")
    assert {row["image"] for row in segments} == {"a", "b"} and all(float(r["length_mm"]) > 0 for r in segments)
    quality = read_csv(output / "quality.csv")
    assert [row["fov_source"] for row in quality] == ["derived from the photograph"] * 2
    assert all(float(row["uncertain_fraction"]) == 0 for row in quality)

    dictionary = json.loads((output / "columns.json").read_text())
    assert dictionary["mm_per_pixel"] == 0.02
    for name in ("biomarkers.csv", "segments.csv", "quality.csv"):
        with open(output / name, newline="") as handle:
            header = next(csv.reader(handle))
        columns = dictionary["files"][name]
        assert list(columns) == header
        assert all(columns[c]["unit"] and columns[c]["definition"] for c in header)
    for name in ("figures/a.png", "figures/b.png", "cohort.png"):
        with Image.open(output / name) as figure:
            assert figure.size[0] > 100
    assert not (output / "figures" / "c.png").exists()
    assert not [p for p in output.rglob("*") if "partial" in p.name]

    before = (output / "biomarkers.csv").read_bytes()
    assert main(arguments) == 2
    assert "exists; choose another output folder or pass --overwrite" in capsys.readouterr().err
    assert (output / "biomarkers.csv").read_bytes() == before
    assert main(arguments + ["--overwrite"]) == 1


def test_measure_pairs_fov_masks_and_works_without_photographs(tmp_path, capsys):
    masks, fov_masks, output = tmp_path / "labels", tmp_path / "fov", tmp_path / "out"
    photo, label = fundus_like(96, 128, 3)
    write_image(masks / "eye.v1.png", label)
    fov = np.zeros(label.shape, np.uint8)
    fov[:, :64] = 255
    write_image(fov_masks / "eye.v1_mask.png", fov)
    assert main(["measure", "--masks", str(masks), "--fov-masks", str(fov_masks), "--output", str(output)]) == 0
    (row,) = read_csv(output / "biomarkers.csv")
    assert row["image"] == "eye.v1" and int(row["fov_area_px2"]) == 96 * 64
    assert int(row["vessel_area_px2"]) == (label[:, :64] > 0).sum()
    (quality,) = read_csv(output / "quality.csv")
    assert quality["fov_source"] == "mask file" and quality["exposure"] == ""
    assert "vessel_area_mm2" not in row
    assert (output / "figures" / "eye.v1.png").exists()
    assert main(["measure", "--masks", str(tmp_path / "nowhere"), "--output", str(output)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_measure_a_datalists_labels_as_the_renamed_folders_would(drive, tmp_path, capsys):
    """DRIVE's first-observer labels (01_manual1.gif) measured through the datalist give the same rows as the same
    files copied under their photograph's name into folders; an unlabelled list, or --masks beside --datalist, is
    one line."""
    datalist = tmp_path / "two.json"
    content = json.loads((REPO / "datalists" / "drive.json").read_text())
    datalist.write_text(
        json.dumps({"testing": content["testing"][:2], "unlabelled": [{"image": content["testing"][0]["image"]}]})
    )
    folders = {kind: tmp_path / kind for kind in ("labels", "images", "fov")}
    for item in content["testing"][:2]:
        stem = item["image"].split("/")[-1].rsplit(".", 1)[0]
        for kind, key in (("labels", "label"), ("images", "image"), ("fov", "mask")):
            folders[kind].mkdir(exist_ok=True)
            shutil.copyfile(drive / item[key], folders[kind] / f"{stem}{Path(item[key]).suffix}")
    common = ["measure", "--dataset-dir", str(drive), "--datalist", str(datalist)]
    assert main([*common, "--output", str(tmp_path / "from_datalist")]) == 0
    by_folders = [
        "--masks",
        str(folders["labels"]),
        "--images",
        str(folders["images"]),
        "--fov-masks",
        str(folders["fov"]),
    ]
    assert main(["measure", *by_folders, "--output", str(tmp_path / "from_folders")]) == 0
    for table in ("biomarkers.csv", "segments.csv", "quality.csv"):
        assert read_csv(tmp_path / "from_datalist" / table) == read_csv(tmp_path / "from_folders" / table), table
    assert [row["image"] for row in read_csv(tmp_path / "from_datalist" / "biomarkers.csv")] == ["01_test", "02_test"]
    capsys.readouterr()
    assert main([*common, "--data-key", "unlabelled", "--output", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip().endswith("has a label to measure")
    assert main([*common, "--masks", str(folders["labels"]), "--output", str(tmp_path / "both")]) == 2


def test_an_output_that_cannot_be_a_folder_is_one_line(tmp_path, capsys):
    _, label = fundus_like(48, 64)
    write_image(tmp_path / "masks" / "a_mask.png", label)
    (tmp_path / "taken").write_text("a file where the output folder would go")
    for output in (tmp_path / "taken", tmp_path / "taken" / "measured"):
        assert main(["measure", "--masks", str(tmp_path / "masks"), "--output", str(output)]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"iternet-monai: --output {output} cannot be made: {tmp_path / 'taken'} is a file"
        ]


def test_files_are_paired_by_the_image_they_belong_to(tmp_path):
    """measure's rule: a file belongs to its stem less a trailing _mask / _prob; with some ``*<prefer>`` files only
    those count; of two files of one image the first by name is kept and the other named as skipped."""
    from iternet_monai.data.maps import files_by_image

    for name in (
        "a_mask.png",
        "a_prob.png",
        "a_overlay.png",
        "b_mask.gif",
        "b_mask.png",
        "c.v1_mask.tif",
        ".d_mask.png",
    ):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    problems: list[str] = []
    found = files_by_image(tmp_path, "_mask", problems)
    assert {stem: path.name for stem, path in found.items()} == {
        "a": "a_mask.png",
        "b": "b_mask.gif",
        "c.v1": "c.v1_mask.tif",
    }
    assert problems == [
        f"{tmp_path / 'b_mask.png'}: another file in {tmp_path} has the same name stem (b_mask.gif); skipped"
    ]
    everything = files_by_image(tmp_path, "_photo", problems)  # no *_photo file: every file counts
    assert sorted(everything) == ["a", "b", "c.v1"] and everything["a"].name == "a_mask.png"
