"""The GPU job (release/gpu_run.sh) cannot rot: its --smoke run does every step on the CPU with a tiny network."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "release"))
from gpu_run import TRAINING_ATTEMPTS, Job, training_command  # noqa: E402

from iternet_monai.engines.checkpoints import iternet_for_weights  # noqa: E402
from iternet_monai.engines.training import latest_stats  # noqa: E402


@pytest.mark.slow
def test_smoke_run_does_every_step_and_writes_at_most_eight_files(drive, tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.setdefault("ITERNET_SHARED_DATA", str(drive.parent))
    result = subprocess.run(
        ["bash", "release/gpu_run.sh", "--smoke", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["metrics.json", "model_fp16.pt", "results.json", "speed.json", "train.log"]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["failures"] == [] and results["smoke"] is True
    assert results["schedule"]["epoch"] == results["schedule"]["total_epochs"] == 2
    table = results["table"]
    assert results["dataset"] == "drive" and set(table) == {
        "paper", "whole_fov", "whole_whole_image_region", "stride3_fov", "stride3_whole_image_region",
        "stride3_fov_paper_ground_truth",
    }  # fmt: skip
    assert all(0 <= table["stride3_fov"][k] <= 1 for k in ("auc", "f1", "connectivity"))
    state = torch.load(tmp_path / "out" / "model_fp16.pt", weights_only=True)
    assert {v.dtype for v in state.values()} == {torch.float16}
    assert results["weights"]["parameters"] == sum(
        p.numel() for p in iternet_for_weights(tmp_path / "out" / "model_fp16.pt").parameters()
    )
    speed = json.loads((tmp_path / "out" / "speed.json").read_text())
    assert {"whole", "stride8", "stride3"} <= set(speed["modes"]) and speed["training_plain_loop"][
        "patches_per_second"
    ] > 0
    check_shipping(tmp_path / "out", results, tmp_path / "scratch")


def check_shipping(out: Path, results: dict, scratch: Path) -> None:
    """ship_run.py on the smoke run, into a scratch copy of the bundle's configs and the docs: refused as a smoke
    run; marked as a real run, it ships the weights, their sha256 and the numbers of results.json."""
    for part in ("configs", "docs"):
        shutil.copytree(REPO / "iternet_monai" / "bundle" / part, scratch / "bundle" / part)
    shutil.copytree(REPO / "docs", scratch / "docs")
    shutil.copyfile(REPO / "README.md", scratch / "README.md")
    ship = [
        sys.executable, "release/ship_run.py", str(out), "--bundle", str(scratch / "bundle"),
        "--docs", str(scratch / "docs"), "--readme", str(scratch / "README.md"),
    ]  # fmt: skip
    refused = subprocess.run(ship, cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "--smoke run" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert not (scratch / "bundle" / "models").exists()
    (out / "results.json").write_text(json.dumps({**results, "smoke": False}))
    shipped = subprocess.run(ship, cwd=REPO, capture_output=True, text=True)
    assert shipped.returncode == 0, shipped.stderr
    weights = scratch / "bundle" / "models" / "model.pt"
    assert weights.read_bytes() == (out / "model_fp16.pt").read_bytes()
    metadata = json.loads((scratch / "bundle" / "configs" / "metadata.json").read_text())
    digest = metadata["weights"]["models/model.pt"]["sha256"]
    assert digest == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert metadata["version"] in metadata["changelog"] and digest in metadata["changelog"][metadata["version"]]
    page = (scratch / "docs" / "results.md").read_text().splitlines()
    row = next(line for line in page if line.startswith("| ours, stride 3, FoV, official ground truth"))
    table = results["table"]["stride3_fov"]
    cells = [table[k] for k in ("auc", "f1", "sensitivity", "specificity", "accuracy", "connectivity", "cal", "cldice")]
    expected = [f"{v:.4f}" if v is not None else "–" for v in cells]  # undefined (a smoke run's clDice): a dash
    assert row.split(" | ")[1:] == expected[:-1] + [expected[-1] + " |"]
    rows = (scratch / "docs" / "benchmarks.md").read_text()
    assert (
        "Not measured yet" not in rows and f"| {results['speed']['modes']['whole']['seconds_per_image']:.3f} |" in rows
    )
    weights.write_bytes(b"weights shipped before")
    kept = subprocess.run(ship, cwd=REPO, capture_output=True, text=True)
    assert kept.returncode == 2 and "--replace" in kept.stderr and weights.read_bytes() == b"weights shipped before"
    assert subprocess.run([*ship, "--replace"], cwd=REPO, capture_output=True).returncode == 0
    assert weights.read_bytes() == (out / "model_fp16.pt").read_bytes()
    replaced = list((weights.parent / "replaced").iterdir())
    assert [p.read_bytes() for p in replaced] == [b"weights shipped before"]  # kept, not lost
    for readme in (scratch / "README.md", scratch / "bundle" / "docs" / "README.md"):
        text = readme.read_text()
        assert "shipped yet" not in text and digest[:16] in text, readme
    (out / "model_fp16.pt").write_bytes(b"other weights")
    changed = subprocess.run(ship, cwd=REPO, capture_output=True, text=True)
    assert changed.returncode == 2 and "sha256" in changed.stderr
    assert weights.read_bytes() != b"other weights"


def test_a_failed_step_is_recorded_and_the_next_one_still_runs(tmp_path):
    job = Job()
    assert not job.run("first", [sys.executable, "-c", "print('broken'); raise SystemExit(3)"])
    assert job.run("second", [sys.executable, "-c", "print('fine')"])
    assert job.call("third", lambda: 1 / 0) is None
    assert [f["step"] for f in job.failures] == ["first", "third"]
    assert job.failures[0]["returncode"] == 3 and job.failures[0]["output_tail"] == ["broken"]
    assert job.steps["second"]["returncode"] == 0 and "ZeroDivisionError" in job.failures[1]["error"]


def test_a_step_past_its_timeout_or_silent_too_long_is_killed_and_one_past_the_deadline_is_skipped():
    job = Job(deadline=Job.RESERVE_SECONDS + 30)
    code = "import time; print('started', flush=True); time.sleep(60)"
    assert not job.run("slow", [sys.executable, "-c", code], timeout=3, min_seconds=1)
    assert job.steps["slow"]["seconds"] < 30 and job.failures[0]["output_tail"][-1].startswith("killed after")
    assert not job.run("silent", [sys.executable, "-c", code], stall_seconds=2, min_seconds=1)
    assert job.steps["silent"]["seconds"] < 20
    assert job.failures[1]["output_tail"] == ["started", "killed after 2 s without output"]
    assert not job.run("too_long", [sys.executable, "-c", "print(1)"], min_seconds=60)
    assert job.steps["too_long"] == {"skipped": True} and "deadline" in job.failures[2]["skipped"]


@pytest.mark.slow
def test_the_gpu_thread_loading_trains(drive, tmp_path):
    """The GPU run's other way of loading (images cached on the training device, augmented by a thread loader, no
    worker processes) is a working command of the bundle: on a GPU it runs only when its loader is the faster, so
    it is run here, on the CPU."""
    datalist = tmp_path / "two.json"
    items = json.loads((REPO / "iternet_monai/data/datalists/drive.json").read_text())["training"][:2]
    datalist.write_text(json.dumps({"training": items, "validation": items[:1]}))
    command = training_command(tmp_path / "bundle", drive, datalist, 5.0, smoke=True)
    command += TRAINING_ATTEMPTS["gpu_thread"]  # after the smoke settings, as the GPU run adds them
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "bundle" / "models" / "model.pt").is_file()
    stats = json.loads(latest_stats(tmp_path / "bundle" / "eval").read_text())
    assert stats["epoch"] == stats["total_epochs"] == 2
