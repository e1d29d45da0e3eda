"""The ``cohort`` command: complete tables and one failure row per bad photograph on real DRIVE and CHASE_DB1 images,
a rerun that recomputes nothing, new weights that recompute everything, shards + gather equal to one run and the same
outputs as ``inference.json`` + ``measure``. The runs on Ray are in test_cohort_ray.py."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cohort_helpers import BAD, TABLES, cohort, result_times, rows, write_manifest
from conftest import dataset
from inference_helpers import run_inference
from PIL import Image

from iternet_monai.biomarkers import measure_folders
from iternet_monai.cohort import read_manifest, shard_of
from iternet_monai.engines import BUNDLE_DIR
from iternet_monai.utils.errors import InputError
from iternet_monai.utils.files import file_sha256

GOOD = ("drive01", "chase01L")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A manifest of a DRIVE and a CHASE_DB1 photograph and four bad files."""
    path, good = write_manifest(tmp_path_factory.mktemp("cohort_inputs"))
    assert good == GOOD
    return path


@pytest.fixture(scope="module")
def first_run(manifest, tmp_path_factory) -> Path:
    """The cohort of ``manifest`` run once as one shard and gathered, with the bundle's weights."""
    output = tmp_path_factory.mktemp("cohort") / "out"
    assert cohort(manifest, output, "--shard", "0/1", "--max-pixels", "1000000") == 1  # some failed
    assert cohort(manifest, output, "--gather") == 1
    return output


def test_manifest_problems_name_the_file_and_line(tmp_path):
    (tmp_path / "m.csv").write_text("id,path\na,x.png\na,y.png\n")
    with pytest.raises(InputError, match=r"m.csv line 3: id a is given twice"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("id,path,mm_per_pixel\n../a,x.png,\n")
    with pytest.raises(InputError, match=r"line 2: id '../a' must be letters"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("id,path,mm_per_pixel\na,x.png,-1\n")
    with pytest.raises(InputError, match=r"line 2: mm_per_pixel must be positive"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("name,file\na,x.png\n")
    assert cohort(tmp_path / "m.csv", tmp_path / "out") == 2


def test_shards_hold_every_item_once(tmp_path):
    (tmp_path / "m.csv").write_text("id,path\n" + "".join(f"i{n},x{n}.png\n" for n in range(10)))
    items = read_manifest(tmp_path / "m.csv")
    shards = [shard_of(items, f"{i}/3") for i in range(3)]
    assert sorted(item.id for shard in shards for item in shard) == sorted(item.id for item in items)
    with pytest.raises(InputError, match="--shard 3/3: expected i/N"):
        shard_of(items, "3/3")


def test_the_package_never_imports_ray():
    code = "import sys, iternet_monai.cli, iternet_monai.cohort, iternet_monai.engines; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "False", result.stderr[-2000:]


def test_file_sha256_is_the_bytes_sha256(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 3_000_000)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(b"x" * 3_000_000).hexdigest()


@pytest.mark.slow
def test_complete_tables_and_one_failure_row_per_bad_photograph(first_run, manifest):
    assert [r["image"] for r in rows(first_run / "biomarkers.csv")] == list(GOOD)
    assert [r["image"] for r in rows(first_run / "quality.csv")] == list(GOOD)
    assert {r["image"] for r in rows(first_run / "segments.csv")} == set(GOOD)
    failures = {r["id"]: r for r in rows(first_run / "failures.csv")}
    assert set(failures) == set(BAD)
    for image_id, words in BAD.items():
        assert words in failures[image_id]["reason"] and failures[image_id]["path"] in failures[image_id]["reason"]
    for image_id in GOOD:
        for kind in ("prob", "mask", "overlay"):
            assert (first_run / "images" / f"{image_id}_{kind}.png").is_file()
    assert "Cohort report" in (first_run / "report.html").read_text()
    assert "<script" not in (first_run / "report.html").read_text()
    if importlib.util.find_spec("pyarrow") is not None:
        import pyarrow.parquet as pq

        table = pq.read_table(first_run / "biomarkers.parquet").to_pylist()
        assert [(r["image"], r["eye"]) for r in table] == [("drive01", "right"), ("chase01L", "left")]
        csv_rows = rows(first_run / "biomarkers.csv")
        assert np.isclose(table[0]["vessel_area_density"], float(csv_rows[0]["vessel_area_density"]), rtol=1e-5)


@pytest.mark.slow
def test_a_rerun_recomputes_nothing(first_run, manifest, capsys):
    before = result_times(first_run)
    capsys.readouterr()
    assert cohort(manifest, first_run, "--shard", "0/1", "--max-pixels", "1000000") == 1
    assert result_times(first_run) == before
    assert f"{len(GOOD) + len(BAD)}/{len(GOOD) + len(BAD)} images ({len(GOOD)} done before)" in capsys.readouterr().err


@pytest.mark.slow
def test_new_weights_recompute_everything(first_run, manifest, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(first_run, output)
    state = torch.load(BUNDLE_DIR / "models" / "model.pt", map_location="cpu")
    torch.save({k: v.float() for k, v in state.items()}, tmp_path / "fp32.pt")  # the same network, other bytes
    before = result_times(output)
    assert cohort(manifest, output, "--shard", "0/1", "--max-pixels", "1000000", "--ckpt", str(tmp_path / "fp32.pt"))
    after = result_times(output)
    assert set(after) == set(before) and all(after[name] != before[name] for name in before)


@pytest.mark.slow
def test_shards_and_gather_equal_one_run(first_run, manifest, tmp_path):
    output = tmp_path / "out"
    for shard in ("0/2", "1/2"):
        assert cohort(manifest, output, "--shard", shard, "--max-pixels", "1000000") == 1
    assert cohort(manifest, output, "--gather") == 1
    for table in TABLES:
        assert (output / table).read_text() == (first_run / table).read_text(), table


@pytest.mark.slow
def test_the_same_outputs_as_inference_and_measure(first_run, tmp_path):
    """inference.json (with its biomarker writer) and the measure command on the same photograph."""
    drive = dataset("DRIVE")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "drive01.tif").symlink_to(drive / "test" / "images" / "01_test.tif")
    predictions = tmp_path / "predictions"
    run_inference(dataset_dir=str(photos), output_dir=str(predictions), backend="pytorch", measure=True)
    for kind in ("prob", "mask", "overlay"):
        ours = np.asarray(Image.open(first_run / "images" / f"drive01_{kind}.png"))
        assert np.array_equal(ours, np.asarray(Image.open(predictions / f"drive01_{kind}.png"))), kind
    for table in ("biomarkers.csv", "quality.csv"):
        assert rows(predictions / table)[0] == rows(first_run / table)[0], table
    measured = tmp_path / "measured"
    assert measure_folders(predictions, measured, images=photos) == 0
    assert rows(measured / "biomarkers.csv")[0] == rows(first_run / "biomarkers.csv")[0]
