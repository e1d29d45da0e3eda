"""End-to-end runs of the bundle commands on 2 DRIVE images with a small network."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, REPO, bundle, train_command, two_drive_images
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_net_in_out

from iternet_monai.networks import IterNet

CONFIGS = REPO / "bundles" / "iternet" / "configs"
SMALL = {"network_def#features": 4}


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


def run_folder(folder: Path) -> Path:
    """The one run folder under ``folder`` (``run-<start time>``)."""
    (run,) = [p for p in folder.iterdir() if p.is_dir()]
    return run


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_training_writes_checkpoints_and_tensorboard(trained):
    _, _, tmp, result = trained
    models = tmp / "models"
    run = run_folder(models)
    assert {p.name for p in models.iterdir() if p.is_file()} == {"model.pt", "model_final.pt"}
    assert [p.name for p in run.iterdir()] == ["checkpoint_iteration=2.pt"]  # the state at the end, resumable
    state = torch.load(models / "model.pt", weights_only=True)
    IterNet(features=4).load_state_dict(state)
    assert list((tmp / "eval" / run.name).glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp / "eval" / run.name), size_guidance={"images": 0}).Reload()
    assert {"train_loss", "learning_rate", "val_auc", "val_f1", "val_connectivity"} <= set(events.Tags()["scalars"])
    tags = ["validation/photograph", "validation/label", "validation/vessel_probability"]
    assert sorted(events.Tags()["images"]) == sorted(tags)
    for tag in tags:  # the photograph's orientation: DRIVE photographs are 565 wide and 584 high
        assert (events.Images(tag)[0].width, events.Images(tag)[0].height) == (565, 584), tag
    assert "val_auc" in result.stdout
    assert "Converting a tensor with requires_grad=True" not in result.stderr


def copy_of_the_trained_run(trained, tmp: Path) -> Path:
    shutil.copytree(trained[2] / "models", tmp / "models")
    shutil.copytree(trained[2] / "eval", tmp / "eval")
    return tmp


@pytest.mark.slow
def test_resume_continues_in_place_and_keeps_the_better_model(trained, tmp_path):
    drive, datalist, _, _ = trained
    folder = copy_of_the_trained_run(trained, tmp_path)
    run = run_folder(folder / "models")
    checkpoint = run / "checkpoint_iteration=2.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["best_model"]["best_metric"] = 0.99  # as if epoch 1 had validated far better than epoch 2 can
    state["best_model"]["_saved"] = [(0.99, name) for _, name in state["best_model"]["_saved"]]
    torch.save(state, checkpoint)
    best_before = (folder / "models" / "model.pt").read_bytes()
    result = train_command(
        drive,
        datalist,
        "--epochs",
        "2",
        "--ckpt_dir",
        str(folder / "models"),
        "--output_dir",
        str(folder / "eval"),
        "--resume",
        str(checkpoint),
        *FAST,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"restored model, optimizer, trainer, best_model from {checkpoint}: iteration 2" in log
    assert "Epoch[2] Complete" in log and "Epoch[1] Complete" not in log
    assert "Got new best metric" not in log and "val_auc best value: 0.99 at epoch: 1" in log
    assert (folder / "models" / "model.pt").read_bytes() == best_before  # the worse model did not replace it
    assert [p.name for p in run.iterdir()] == ["checkpoint_iteration=4.pt"]  # continued in place
    state = torch.load(run / "checkpoint_iteration=4.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 4 and state["best_model"]["best_metric"] == 0.99
    assert not [p for p in (folder / "models").iterdir() if p.name.startswith("model_2")]  # no dated copies
    runs = [p for p in (folder / "eval").iterdir() if p.is_dir()]
    assert len(runs) == 1  # TensorBoard continues the run's folder


MONAI_LABEL_TRAIN = """
import json, sys
import monai.bundle
from monai.bundle import ConfigParser

bundle, items, fast = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
config = ConfigParser()
config.read_config(bundle + "/configs/train.json")
handlers = config.get("train#handlers", [])  # what BundleTrainTask does, MONAI Label 0.8.5
handlers.insert(0, {"_target_": "CheckpointLoader", "load_path": bundle + "/models/model.pt",
                    "load_dict": {"model": "$@network"}, "strict": False})
monai.bundle.run(
    run_id="",  # 3D Slicer's Train button sends an empty run_id
    init_id=None,
    final_id=None,
    meta_file=bundle + "/configs/metadata.json",
    config_file=bundle + "/configs/train.json",
    **{"bundle_root": bundle, "ckpt_dir": bundle + "/models", "output_dir": bundle + "/eval",  # VesselTrainTask's
       "train#trainer#max_epochs": 1, "train#dataset#data": items[:2],
       "device": "cpu", "train#handlers": handlers, "validate#dataset#data": items[2:]},
    **fast,
)
"""


@pytest.mark.slow
def test_a_second_training_in_the_same_folder_keeps_the_first(trained, tmp_path):
    """As MONAI Label's BundleTrainTask runs it (Slicer's request: run_id ''), fine-tuning the bundle's model.pt."""
    drive, _, _, _ = trained
    bundle = copy_of_the_trained_run(trained, tmp_path / "bundle")
    shutil.copytree(CONFIGS, bundle / "configs")
    first = run_folder(bundle / "models")
    first_run = contents(first) | contents(bundle / "eval" / first.name)
    first_models = {name: (bundle / "models" / name).read_bytes() for name in ("model.pt", "model_final.pt")}
    items = [
        {
            "image": str(drive / "training" / "images" / f"{n}_training.tif"),
            "label": str(drive / "training" / "1st_manual" / f"{n}_manual1.gif"),
        }
        for n in (21, 22, 23)
    ]
    fast = dict(zip([key.lstrip("-") for key in FAST[::2]], [json.loads(value) for value in FAST[1::2]]))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", MONAI_LABEL_TRAIN, str(bundle), json.dumps(items), json.dumps(fast)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert log.count("training run run-") == 1 and log.count("Train completed") == 1  # one Train press, one run
    assert contents(first) | contents(bundle / "eval" / first.name) == first_run  # untouched
    second = [p for p in (bundle / "models").iterdir() if p.is_dir() and p != first]
    assert len(second) == 1 and list(second[0].glob("checkpoint_iteration=*.pt"))
    assert (bundle / "eval" / second[0].name).is_dir()
    for name, content in first_models.items():
        kept = [p for p in (bundle / "models").glob(name.replace(".pt", "_2*.pt"))]
        assert len(kept) == 1 and kept[0].read_bytes() == content, name
        assert (bundle / "models" / name).read_bytes() != content  # the new run's model


def fast_with_default_workers(*extra: str) -> list[str]:
    """FAST with the data loader's default worker count (the machine's) and ``extra`` overrides."""
    skip = {FAST.index("--num_workers"), FAST.index("--num_workers") + 1}
    return [arg for i, arg in enumerate(FAST) if i not in skip] + list(extra)


def saved_steps(models: Path) -> list[int]:
    return [int(p.stem.split("=")[1]) for p in models.glob("*/checkpoint_iteration=*.pt")]


@pytest.mark.slow
def test_progress_at_once_and_sigterm_mid_epoch_then_a_resume_that_loses_nothing(drive, tmp_path):
    """The batch-system case: SIGTERM to the whole process group (training process and data loader workers)."""
    datalist = two_drive_images(drive, tmp_path)
    args = ["run", "training", "--config_file", "bundles/iternet/train.json", "--dataset_dir", str(drive)]
    args += ["--datalist", str(datalist), "--epochs", "1"]
    args += ["--ckpt_dir", str(tmp_path / "bundle" / "models"), "--output_dir", str(tmp_path / "bundle" / "eval")]
    args += fast_with_default_workers("--steps_per_epoch", "40", "--checkpoint_steps", "5", "--progress_seconds", "0")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "monai.bundle", *args],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while max(saved_steps(tmp_path / "bundle" / "models"), default=0) < 10:  # mid-epoch, two checkpoints in
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    text = log.read_text()
    assert text.index("training run run-") < text.index("Loading dataset")  # said before the images load
    assert text.index("training on cpu: 1 epochs x 40 steps, 40 steps to go") < text.index("saved ")
    assert re.search(r"epoch 1/1 step \d+/40: loss [\d.]+; [\d.]+ s/step; epoch done in .*, training in ", text)
    (checkpoint,) = (tmp_path / "bundle" / "models").glob("*/checkpoint_iteration=*.pt")
    stopped_at = int(checkpoint.stem.split("=")[1])
    assert 10 <= stopped_at < 40  # nothing lost: the step in progress when the signal came, or the one before
    assert f"continue it: the same command with --resume '{checkpoint}'" in text
    result = bundle(*args, "--resume", str(checkpoint))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"Engine run resuming from iteration {stopped_at}, epoch 0 until 1 epochs" in result.stdout
    assert [p.name for p in checkpoint.parent.iterdir()] == ["checkpoint_iteration=40.pt"]
    assert (tmp_path / "bundle" / "models" / "model_final.pt").is_file()


def test_train_workflow_has_the_required_properties(drive, tmp_path):
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
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
        "run_name",
        "checkpoint_minutes",
        "checkpoint_steps",
        "progress_seconds",
        "val_mode",
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
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "eval"),
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
    (checkpoint,) = (tmp_path / "models").glob("run-*/checkpoint_iteration=*.pt")
    state = torch.load(checkpoint, weights_only=True)
    assert state["trainer"]["iteration"] == 2
    IterNet(features=4).load_state_dict(torch.load(tmp_path / "models" / "model.pt", weights_only=True))


def test_inference_config_builds_the_training_network():
    """Untrained (no weights), the inference config's network is the training config's; the metadata's version is in
    its changelog and its output is the one vessel channel."""
    networks = []
    for name, overrides in (("train.json", {}), ("inference.json", {"ckpt_path": None})):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / name))
        parser.update(overrides)
        networks.append(parser.get_parsed_content("network_def"))
    shapes = [{k: v.shape for k, v in network.state_dict().items()} for network in networks]
    assert type(networks[0]) is type(networks[1]) is IterNet and shapes[0] == shapes[1]
    metadata = json.loads((CONFIGS / "metadata.json").read_text())
    assert metadata["version"] in metadata["changelog"]
    pred = metadata["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == len(pred["channel_def"]) == 1 and pred["channel_def"] == {"0": "vessel"}
