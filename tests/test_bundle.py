"""End-to-end runs of the bundle commands on 2 DRIVE images with a small network."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO
from monai.bundle import ConfigWorkflow, ckpt_export, verify_net_in_out

from iternet_monai.networks import IterNet

CONFIGS = REPO / "bundles" / "iternet" / "configs"
SMALL = {"network_def#features": 4}
FAST = [
    "--network_def#features",
    "4",
    "--patch_size",
    "[64,64]",
    "--batch_size",
    "4",
    "--num_patches",
    "2",
    "--steps_per_epoch",
    "2",
    "--num_workers",
    "0",
    "--val_interval",
    "1",
    "--sw_overlap",
    "0.0",
    "--sw_batch_size",
    "16",
]


def bundle(
    *args: str, cwd: Path = REPO, launcher: tuple[str, ...] = (sys.executable, "-m")
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [*launcher, "monai.bundle", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600
    )


def train_command(dataset_dir: Path, datalist: Path, *extra: str) -> subprocess.CompletedProcess:
    """The user's exact training command, run from the repository root, with a dataset, a datalist and overrides."""
    return bundle(
        "run",
        "training",
        "--config_file",
        "bundles/iternet/train.json",
        "--dataset_dir",
        str(dataset_dir),
        "--datalist",
        str(datalist),
        *extra,
    )


def two_drive_images(drive: Path, tmp: Path) -> Path:
    content = json.loads((REPO / "datalists" / "drive.json").read_text())
    path = tmp / "drive2.json"
    path.write_text(
        json.dumps(
            {
                "training": content["training"][:2],
                "validation": content["training"][:2],
                "testing": content["testing"][:2],
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The user's exact command (plus a small network and short schedule), run once for the module."""
    from conftest import dataset

    drive = dataset("DRIVE")
    tmp = tmp_path_factory.mktemp("train")
    datalist = two_drive_images(drive, tmp)
    result = train_command(
        drive, datalist, "--epochs", "1", "--ckpt_dir", str(tmp / "models"), "--output_dir", str(tmp / "eval"), *FAST
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return drive, datalist, tmp, result


@pytest.mark.slow
def test_training_writes_checkpoints_and_tensorboard(trained):
    _, _, tmp, result = trained
    models = tmp / "models"
    assert {"model.pt", "model_final.pt", "checkpoint_epoch=1.pt"} <= {p.name for p in models.iterdir()}
    state = torch.load(models / "model.pt", weights_only=True)
    IterNet(features=4).load_state_dict(state)
    assert list((tmp / "eval").glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp / "eval"), size_guidance={"images": 0}).Reload()
    assert {"train_loss", "learning_rate", "val_auc", "val_f1", "val_connectivity"} <= set(events.Tags()["scalars"])
    assert events.Tags()["images"]
    assert "val_auc" in result.stdout


@pytest.mark.slow
def test_resume_continues_from_the_full_checkpoint(trained):
    drive, datalist, tmp, _ = trained
    checkpoint = tmp / "models" / "checkpoint_epoch=1.pt"
    bundle_root = tmp / "bundle_root"
    result = bundle(
        "run",
        "training",
        "--config_file",
        str(CONFIGS / "train.json"),
        "--bundle_root",
        str(bundle_root),
        "--dataset_dir",
        str(drive),
        "--datalist",
        str(datalist),
        "--epochs",
        "2",
        "--resume",
        str(checkpoint),
        *FAST,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"Restored all variables from {checkpoint}" in log
    assert "Epoch[2] Complete" in log and "Epoch[1] Complete" not in log
    state = torch.load(bundle_root / "models" / "checkpoint_epoch=2.pt", weights_only=False)
    assert state["trainer"]["iteration"] == 4 and state["trainer"]["max_epochs"] == 2
    assert (bundle_root / "models" / "model.pt").is_file()


def test_no_dataset_stops_quickly_with_one_message(tmp_path):
    start = time.monotonic()
    result = bundle("run", "training", "--config_file", "bundles/iternet/train.json", "--ckpt_dir", str(tmp_path))
    assert result.returncode != 0
    assert time.monotonic() - start < 60
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("iternet: no dataset folder given: pass --dataset_dir")


def test_missing_datalist_files_are_named_before_training(tmp_path):
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"training": [{"image": "a.tif", "label": "a.gif"}, {"image": "b.tif"}]}))
    result = train_command(tmp_path, datalist, "--ckpt_dir", str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    for name in ("a.tif: missing", "a.gif: missing", "b.tif: missing"):
        assert name in result.stderr
    assert not list(tmp_path.glob("*.pt"))


def test_train_workflow_has_the_required_properties(drive, tmp_path):
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        bundle_root=str(tmp_path),
        dataset_dir=str(drive),
        datalist=str(two_drive_images(drive, tmp_path)),
        num_workers=0,
        **SMALL,
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    for key in (
        "dataset_dir",
        "datalist",
        "epochs",
        "batch_size",
        "learning_rate",
        "device",
        "amp",
        "num_workers",
        "ckpt_dir",
        "output_dir",
        "val_interval",
        "sw_overlap",
        "network_def",
        "resume",
    ):
        assert key in workflow.parser, key


def test_verify_net_in_out():
    verify_net_in_out(
        "network_def", meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "train.json"), n=4, **SMALL
    )


def test_ckpt_export_to_torchscript_gives_the_eager_output(tmp_path):
    net = IterNet(features=4).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    ckpt_export(
        "network_def",
        filepath=str(tmp_path / "model.ts"),
        ckpt_file=str(tmp_path / "model.pt"),
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "train.json"),
        **SMALL,
    )
    scripted = torch.jit.load(tmp_path / "model.ts")
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)


@pytest.mark.slow
def test_multi_gpu_config_under_torchrun_with_two_cpu_processes(drive, tmp_path):
    datalist = two_drive_images(drive, tmp_path)
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m")
    result = bundle(
        "run",
        "training",
        "--config_file",
        configs,
        "--bundle_root",
        str(tmp_path),
        "--dataset_dir",
        str(drive),
        "--datalist",
        str(datalist),
        "--epochs",
        "1",
        *FAST,
        launcher=torchrun,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = torch.load(tmp_path / "models" / "checkpoint_epoch=1.pt", weights_only=False)
    assert state["trainer"]["iteration"] == 2
    IterNet(features=4).load_state_dict(torch.load(tmp_path / "models" / "model.pt", weights_only=True))


def test_inference_config_builds_the_training_network():
    train = json.loads((CONFIGS / "train.json").read_text())
    inference = json.loads((CONFIGS / "inference.json").read_text())
    shape = {k: v for k, v in train["network_def"].items() if k != "_target_"}
    assert train["network_def"]["_target_"] == "iternet_monai.networks.IterNet"
    assert inference["network_def"] == {
        "_target_": "iternet_monai.checkpoints.iternet_for_weights",
        "weights": "@ckpt_path",
        **shape,
    }
    metadata = json.loads((CONFIGS / "metadata.json").read_text())
    assert metadata["version"] in metadata["changelog"]
    pred = metadata["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == len(pred["channel_def"]) == 1 and pred["channel_def"] == {"0": "vessel"}
