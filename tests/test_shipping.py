"""Shipping a training run of the bundle: score_run.py scores it from its own files, ship_run.py ships it as its
dataset's model, both on a tiny run of two DRIVE images (the GPU job's shipping is tested in test_gpu_run.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO

TINY = [
    "--network_def#features", "4", "--patch_size", "[64,64]", "--batch_size", "4", "--num_patches", "2",
    "--steps_per_epoch", "2", "--epochs", "2", "--val_interval", "1", "--device", "cpu",
]  # fmt: skip


@pytest.mark.slow
def test_a_training_run_is_scored_and_shipped_from_its_own_files(drive, tmp_path):
    content = json.loads((REPO / "iternet_monai" / "data" / "datalists" / "drive.json").read_text())
    datalist = tmp_path / "two.json"
    two = {"training": content["training"][:2], "validation": content["training"][:2]}
    datalist.write_text(json.dumps({**two, "testing": content["testing"][:2]}))
    train = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
        "['bundles/iternet/configs/train.json','bundles/iternet/configs/train_cpu.json']", "--ckpt_dir",
        str(tmp_path / "run" / "models"), "--output_dir", str(tmp_path / "run" / "eval"), "--dataset_dir", str(drive),
        "--datalist", str(datalist), "--run_name", "tiny", *TINY,
    ]  # fmt: skip
    trained = subprocess.run(train, cwd=REPO, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-3000:]
    score = [
        sys.executable, "release/score_run.py", str(tmp_path / "out"), "--models-dir",
        str(tmp_path / "run" / "models"), "--run", "tiny", "--dataset", "drive", "--dataset-dir", str(drive),
        "--datalist", str(datalist), "--events", str(tmp_path / "run" / "eval" / "tiny"),
        "--training-command", "python -m monai.bundle run training (tiny)",
    ]  # fmt: skip
    scored = subprocess.run(score, cwd=REPO, capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["schedule"]["patches"] == 2 * 2 * 4 and results["schedule"]["seconds"] > 0  # 2 epochs x 2 steps
    assert set(results["table"]) == {"paper", "whole_fov", "whole_whole_image_region", "whole_fov_paper_ground_truth"}
    assert all(0 <= results["table"][row]["auc"] <= 1 for row in results["table"])
    assert results["weights"]["check"]["images"] == [item["image"] for item in content["testing"][:2]]
    curve = results["validation_curve"]  # validated after each of its 2 epochs (--val_interval 1)
    assert [(p["epoch"], p["patches"]) for p in curve] == [(1, 8), (2, 16)]
    assert all(0 <= p["auc"] <= 1 and 0 <= p["f1"] <= 1 for p in curve)
    state = torch.load(tmp_path / "out" / "model_fp16.pt", weights_only=True)
    assert {v.dtype for v in state.values()} == {torch.float16}

    scratch = tmp_path / "scratch"
    for part in ("configs", "docs"):
        shutil.copytree(REPO / "iternet_monai" / "bundle" / part, scratch / "bundle" / part)
    shutil.copytree(REPO / "docs", scratch / "docs")
    shutil.copyfile(REPO / "README.md", scratch / "README.md")
    results["dataset"] = "chase_db1"  # shipped as the other dataset's model: its own file and section
    (tmp_path / "out" / "results.json").write_text(json.dumps(results))
    ship = [
        sys.executable, "release/ship_run.py", str(tmp_path / "out"), "--bundle", str(scratch / "bundle"),
        "--docs", str(scratch / "docs"), "--readme", str(scratch / "README.md"),
    ]  # fmt: skip
    shipped = subprocess.run(ship, cwd=REPO, capture_output=True, text=True)
    assert shipped.returncode == 0, shipped.stderr
    assert (scratch / "bundle" / "models" / "model_chase_db1.pt").read_bytes() == (
        tmp_path / "out" / "model_fp16.pt"
    ).read_bytes()
    metadata = json.loads((scratch / "bundle" / "configs" / "metadata.json").read_text())
    entry = metadata["weights"]["models/model_chase_db1.pt"]
    assert entry["dataset"] == "chase_db1" and entry["patches_seen"] == 16 and entry["check"]["auc"] > 0
    page = (scratch / "docs" / "results.md").read_text()
    section = page[page.index("<!-- chase_db1:start -->") : page.index("<!-- chase_db1:end -->")]
    assert f"{results['table']['whole_fov']['auc']:.4f}" in section and "Not trained yet" not in section
    assert "## CHASE_DB1 (Table 2)" in section
    assert f"| 16 | {curve[1]['auc']:.4f} | {curve[1]['f1']:.4f} |" in section  # no test curve: the validation curve


def test_a_target_missed_by_less_than_its_last_shown_digit_is_shown_with_the_digits_that_tell():
    sys.path.insert(0, str(REPO / "release"))
    from ship_run import targets

    results = {"dataset": "drive", "table": {"whole_fov": {"auc": 0.97926, "f1": 0.809971}}, "schedule": {}}
    lines = targets(results)
    assert lines[:2] == ["- met: AUC ≥ 0.978: 0.9793", "- missed: F1 ≥ 0.81: 0.80997"]
