"""The user's training command on a dataset with bad files, on a malformed datalist, and without a validation list."""

import json

import pytest
import torch
from conftest import FAST, bad_input_corpus, train_command, two_drive_images

from iternet_monai.networks import IterNet


def outputs(tmp_path):
    return ["--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval")]


@pytest.mark.slow
def test_training_names_every_bad_file_in_one_run_and_writes_nothing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    entries, expected = bad_input_corpus(data)
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"training": entries, "validation": entries[:1]}))
    result = train_command(data, datalist, *outputs(tmp_path), "--num_workers", "0")
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"iternet: {len(expected)} problem(s) with 'training'")
    for name, why in expected.items():
        assert [line for line in lines if f"{data / name}: " in line and why in line], name
    assert not (tmp_path / "models").exists() and not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_malformed_datalist_stops_training_with_one_line(tmp_path):
    (tmp_path / "list.json").write_text('{"training": [{"image": "a.png"')
    result = train_command(tmp_path, tmp_path / "list.json", *outputs(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"iternet: datalist {tmp_path / 'list.json'} is not valid")
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
def test_training_without_a_validation_list_keeps_the_last_model(drive, tmp_path):
    content = json.loads(two_drive_images(drive, tmp_path).read_text())
    datalist = tmp_path / "train_only.json"
    datalist.write_text(json.dumps({"training": content["training"]}))
    result = train_command(drive, datalist, "--epochs", "1", *outputs(tmp_path), *FAST)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert log.count("has no 'validation' list: training without validation") == 1
    assert "val_auc" not in log
    models = tmp_path / "models"
    assert (models / "model.pt").is_file() and not (models / "model_final.pt").exists()
    IterNet(features=4).load_state_dict(torch.load(models / "model.pt", weights_only=True))
