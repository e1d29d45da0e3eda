"""The bundle's training when its inputs or disk fail: one line naming the file or folder, nothing left behind."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, bundle, train_command, two_drive_images

from iternet_monai.networks import IterNet


@pytest.mark.slow
def test_a_damaged_checkpoint_to_resume_is_one_line_naming_it(tmp_path):
    damaged = tmp_path / "checkpoint_iteration=7.pt"
    torch.save({"model": IterNet(features=4).state_dict()}, damaged)
    damaged.write_bytes(damaged.read_bytes()[:1000])
    result = bundle(
        "run",
        "training",
        "--config_file",
        "bundles/iternet/train.json",
        "--dataset_dir",
        str(tmp_path),
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
        "--resume",
        str(damaged),
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"iternet: {damaged}: not a readable PyTorch checkpoint")
    assert not (tmp_path / "models").exists() and not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_a_models_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "models").write_text("a file where the models folder would go")
    result = train_command(tmp_path, tmp_path / "list.json", "--ckpt_dir", str(tmp_path / "models"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"iternet: --ckpt_dir {tmp_path / 'models'} cannot be made: {tmp_path / 'models'} is a file"
    )


ATOMIC_WRITE_ON_A_FULL_DISK = """
import sys
from pathlib import Path
from iternet_monai.utils.errors import OutputError
from iternet_monai.utils.files import atomic_write_text
path = Path(sys.argv[1]) / "table.csv"
try:
    atomic_write_text(path, "x" * 1_000_000)
except OutputError as error:
    print(error)
print(sorted(p.name for p in path.parent.iterdir()))
"""


def on_a_full_disk(command: list[str], disk: Path, size: str = "200k") -> list[str]:
    """``command`` run where ``disk`` is a new file system of ``size`` (a user and mount namespace, as a user
    without privileges may make): the disk fills up as the command writes."""
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("this machine cannot make a mount namespace (unshare -r -m) for a small disk")
    disk.mkdir(parents=True, exist_ok=True)
    mount = f'mount -t tmpfs -o size={size} tmpfs "{disk}" && exec "$@"'
    return ["unshare", "-r", "-m", "sh", "-c", mount, "sh", *command]


def test_a_write_on_a_full_disk_names_the_file_and_leaves_nothing(tmp_path):
    disk = tmp_path / "disk"
    command = on_a_full_disk([sys.executable, "-c", ATOMIC_WRITE_ON_A_FULL_DISK, str(disk)], disk)
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines() == [f"cannot write {disk / 'table.csv'}: No space left on device", "[]"]


@pytest.mark.slow
def test_a_full_disk_during_training_is_one_line_saying_so(drive, tmp_path):
    disk = tmp_path / "disk"
    command = on_a_full_disk([sys.executable, "-m"], disk)
    result = bundle(
        "run", "training", "--config_file", "bundles/iternet/train.json", "--dataset_dir", str(drive),
        "--datalist", str(two_drive_images(drive, tmp_path)), "--epochs", "1", "--ckpt_dir", str(disk / "models"),
        "--output_dir", str(disk / "eval"), *FAST, launcher=tuple(command),
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("iternet: cannot write ") and str(disk) in last
    assert last.endswith(": No space left on device")


@pytest.mark.slow
def test_no_dataset_stops_quickly_with_one_message(tmp_path):
    start = time.monotonic()
    result = bundle("run", "training", "--config_file", "bundles/iternet/train.json", "--ckpt_dir", str(tmp_path))
    assert result.returncode != 0
    assert time.monotonic() - start < 60
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("iternet: no dataset folder given: pass --dataset_dir")


@pytest.mark.slow
def test_missing_datalist_files_are_named_before_training(tmp_path):
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"training": [{"image": "a.tif", "label": "a.gif"}, {"image": "b.tif"}]}))
    result = train_command(tmp_path, datalist, "--ckpt_dir", str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    for name in ("a.tif: missing", "a.gif: missing", "b.tif: missing"):
        assert name in result.stderr
    assert not list(tmp_path.glob("*.pt"))
