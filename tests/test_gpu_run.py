"""The GPU job (benchmarks/gpu_run.sh) cannot rot: its --smoke run does every step on the CPU with a tiny network."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from gpu_run import Job  # noqa: E402

from iternet_monai.checkpoints import iternet_for_weights  # noqa: E402


@pytest.mark.slow
def test_smoke_run_does_every_step_and_writes_at_most_eight_files(drive, tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.setdefault("ITERNET_SHARED_DATA", str(drive.parent))
    result = subprocess.run(
        ["bash", "benchmarks/gpu_run.sh", "--smoke", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["metrics.json", "model_fp16.pt", "results.json", "speed.json", "train.log"]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["failures"] == [] and results["smoke"] is True
    assert results["schedule"]["epoch"] == results["schedule"]["total_epochs"] == 2
    table = results["table1_drive"]
    assert set(table) == {
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


def test_a_failed_step_is_recorded_and_the_next_one_still_runs(tmp_path):
    job = Job()
    assert not job.run("first", [sys.executable, "-c", "print('broken'); raise SystemExit(3)"])
    assert job.run("second", [sys.executable, "-c", "print('fine')"])
    assert job.call("third", lambda: 1 / 0) is None
    assert [f["step"] for f in job.failures] == ["first", "third"]
    assert job.failures[0]["returncode"] == 3 and job.failures[0]["output_tail"] == ["broken"]
    assert job.steps["second"]["returncode"] == 0 and "ZeroDivisionError" in job.failures[1]["error"]
