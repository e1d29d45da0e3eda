"""The ``cohort`` command: complete tables and one failure row per bad photograph on real DRIVE and CHASE_DB1 images,
a rerun that recomputes nothing, new weights that recompute everything, shards + gather equal to one run, the same
outputs as ``inference.json`` + ``measure`` and, where Ray is installed, the Ray run equal to the shards."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import dataset, write_image
from inference_helpers import run_inference
from PIL import Image

from iternet_monai.biomarkers import measure_folders
from iternet_monai.cli import main
from iternet_monai.cohort import read_manifest, shard_of
from iternet_monai.engines import BUNDLE_DIR
from iternet_monai.utils.errors import InputError
from iternet_monai.utils.files import file_sha256

TABLES = ("biomarkers.csv", "segments.csv", "quality.csv", "failures.csv")
GOOD = ("drive01", "chase01L")
BAD = {
    "missing": "cannot read the photograph (No such file or directory)",
    "text": "is not a readable image",
    "gray": "grayscale image",
    "huge": "more than the limit of 1,000,000 (max_pixels)",
}


def cohort(manifest: Path, output: Path, *options: str) -> int:
    """The user's command, with the PyTorch backend (inference.json's run in the equality test uses it too)."""
    return main(["cohort", str(manifest), "--output", str(output), "--backend", "pytorch", *options])


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A manifest of a DRIVE and a CHASE_DB1 photograph (in the shared data, not copied) and four bad files."""
    drive, chase = dataset("DRIVE"), dataset("CHASE_DB1")
    root = tmp_path_factory.mktemp("cohort_inputs")
    (root / "text.png").write_text("not an image\n")
    photo = np.asarray(Image.open(drive / "test" / "images" / "01_test.tif"))
    write_image(root / "gray.png", photo[..., 1])
    write_image(root / "huge.png", np.zeros((1001, 1000, 3), np.uint8))  # above --max-pixels 1000000
    lines = ["id,path,eye", f"drive01,{drive / 'test' / 'images' / '01_test.tif'},right"]
    lines += [f"chase01L,{chase / 'Image_01L.jpg'},left", "missing,no_such.png,", "text,text.png,"]
    lines += ["gray,gray.png,", "huge,huge.png,"]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def first_run(manifest, tmp_path_factory) -> Path:
    """The cohort of ``manifest`` run once as one shard and gathered, with the bundle's weights."""
    output = tmp_path_factory.mktemp("cohort") / "out"
    assert cohort(manifest, output, "--shard", "0/1", "--max-pixels", "1000000") == 1  # some failed
    assert cohort(manifest, output, "--gather") == 1
    return output


def result_times(output: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((output / "results").glob("*.json"))}


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


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='Ray is not installed (pip install -e ".[cohort]")')
def test_the_ray_run_equals_the_shards_and_resumes(first_run, manifest, tmp_path):
    output = tmp_path / "out"
    assert cohort(manifest, output, "--cpus", "2", "--max-pixels", "1000000") == 1
    for table in TABLES:
        assert (output / table).read_text() == (first_run / table).read_text(), table
    before = result_times(output)
    assert cohort(manifest, output, "--cpus", "2", "--max-pixels", "1000000") == 1
    assert result_times(output) == before


def ray_node(*args: str) -> subprocess.Popen:
    """``ray start --block`` in a session of its own, so that stopping it stops only the Ray processes it began."""
    ray = Path(sys.executable).with_name("ray")
    return subprocess.Popen(
        [str(ray), "start", "--block", "--disable-usage-stats", *args], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='Ray is not installed (pip install -e ".[cohort]")')
def test_a_two_node_ray_cluster_gives_the_same_tables(first_run, manifest, tmp_path):
    port = 6400 + os.getpid() % 500
    nodes = [ray_node("--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false")]
    try:
        time.sleep(15)  # the head's GCS must answer before a worker node joins
        nodes.append(ray_node(f"--address=127.0.0.1:{port}", "--num-cpus=1"))
        time.sleep(15)
        output = tmp_path / "out"
        assert cohort(manifest, output, "--address", f"127.0.0.1:{port}", "--max-pixels", "1000000") == 1
        for table in TABLES:
            assert (output / table).read_text() == (first_run / table).read_text(), table
    finally:
        for node in reversed(nodes):
            os.killpg(node.pid, signal.SIGTERM)
            node.wait(timeout=60)
