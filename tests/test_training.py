"""Training runs that lose nothing: atomic checkpoints, kills, resumes, the random stream, progress, defaults.

A small synthetic training (8 random images, random crops and flips, a network with dropout) runs MONAI's
``SupervisedTrainer`` under :class:`~iternet_monai.engines.TrainingRun` in a second; the bundle's end-to-end runs
are in ``test_bundle.py``.
"""

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import REPO, STEPS, synthetic_run
from ignite.engine import Events

from iternet_monai.engines import TrainingRun, default_num_workers, latest_stats
from iternet_monai.engines.checkpoints import CheckpointError, read_checkpoint
from iternet_monai.handlers import TrainingValidation, engine_loss
from iternet_monai.utils.errors import InputError


def checkpoints(run: TrainingRun) -> list[str]:
    return sorted(p.name for p in run.checkpoint_dir.iterdir())


def signal_at(iteration: int, signum: int = signal.SIGTERM):
    def hook(trainer):
        @trainer.on(Events.ITERATION_COMPLETED(once=iteration))
        def send(_):
            os.kill(os.getpid(), signum)

    return hook


def test_a_resume_at_an_epoch_end_continues_exactly_as_an_uninterrupted_run(tmp_path):
    _, whole, seen = synthetic_run(tmp_path / "a", epochs=3)
    first, _, seen_first = synthetic_run(tmp_path / "b", epochs=1)
    assert checkpoints(first) == [f"checkpoint_iteration={STEPS}.pt"]
    _, resumed, seen_after = synthetic_run(
        tmp_path / "b", epochs=3, resume=first.checkpoint_dir / f"checkpoint_iteration={STEPS}.pt"
    )
    assert seen_first + seen_after == seen  # the same shuffles and crops: the random stream continues
    assert seen[STEPS : 2 * STEPS] != seen[:STEPS]
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_a_resumed_run_records_the_patches_and_time_of_all_its_sessions(tmp_path):
    """Each step has 2 images of one 16x16 patch: 2 patches; the time of the first session (at least 0.2 s, the time
    is kept to 0.1 s) is carried over."""

    def slow_steps(trainer):
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: time.sleep(0.05))

    first, _, _ = synthetic_run(tmp_path, epochs=1, hook=slow_steps)
    saved = read_checkpoint(first.checkpoint_dir / f"checkpoint_iteration={STEPS}.pt")["run"]
    assert saved["patches"] == 2 * STEPS and saved["seconds"] > 0
    resumed, _, _ = synthetic_run(tmp_path, epochs=3, resume=first.checkpoint_dir / f"checkpoint_iteration={STEPS}.pt")
    final = read_checkpoint(resumed.checkpoint_dir / f"checkpoint_iteration={3 * STEPS}.pt")["run"]
    assert final["patches"] == 2 * 3 * STEPS and final["seconds"] >= saved["seconds"]


def test_sigterm_mid_epoch_saves_that_step_and_the_resume_does_not_repeat_patches(tmp_path):
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)}
    with pytest.raises(SystemExit) as stopped:
        synthetic_run(tmp_path, epochs=2, hook=signal_at(3))
    assert stopped.value.code == 128 + signal.SIGTERM
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers  # given back
    folder = next(p for p in (tmp_path / "models").iterdir() if p.is_dir())
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_iteration=3.pt"]  # no step lost
    assert read_checkpoint(folder / "checkpoint_iteration=3.pt")["trainer"]["iteration"] == 3
    run, _, seen = synthetic_run(tmp_path, epochs=2, resume=folder / "checkpoint_iteration=3.pt")
    assert run.checkpoint_dir == folder and checkpoints(run) == [f"checkpoint_iteration={2 * STEPS}.pt"]
    assert len(seen) == 2 * STEPS - 3  # only the steps left
    _, _, fresh = synthetic_run(tmp_path / "fresh", epochs=1)
    assert not set(seen[: STEPS - 3]) & set(fresh[:3])  # the rest of epoch 1 is not a replay of its first steps


SCRIPT = """
import os, signal, sys, time
from pathlib import Path
import torch
from ignite.engine import Events
sys.path.insert(0, {tests!r})
from conftest import synthetic_run
{body}
"""

DIE_WHILE_SAVING = """
real_save = torch.save

def save_then_die(content, handle, *args, **kwargs):
    if "checkpoint_iteration=6" in handle.name:  # half the file, then SIGKILL: nothing after this runs
        handle.write(b"PK the first bytes of a checkpoint")
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(content, handle, *args, **kwargs)

torch.save = save_then_die
synthetic_run(Path(sys.argv[1]), epochs=2, checkpoint_steps=3)
"""

SIGTERM_TWICE = """
def hook(trainer):
    @trainer.on(Events.ITERATION_COMPLETED(once=2))
    def twice(_):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the first is handled here; the second ends the process before the step can finish
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)

synthetic_run(Path(sys.argv[1]), epochs=2, hook=hook)
"""


def run_script(body: str, folder: Path) -> subprocess.CompletedProcess:
    script = SCRIPT.format(tests=str(REPO / "tests"), body=body)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-c", script, str(folder)], env=env, capture_output=True, timeout=300)


def test_a_second_signal_ends_the_process_at_once(tmp_path):
    result = run_script(SIGTERM_TWICE, tmp_path)
    assert result.returncode == -signal.SIGTERM, result.stderr.decode()[-3000:]
    assert not list((tmp_path / "models").glob("*/*.pt"))  # killed before it could save


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_checkpoint_and_the_resume_works(tmp_path):
    result = run_script(DIE_WHILE_SAVING, tmp_path)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-3000:]
    folder = next(p for p in (tmp_path / "models").iterdir() if p.is_dir())
    names = sorted(p.name for p in folder.iterdir())
    assert "checkpoint_iteration=3.pt" in names and "checkpoint_iteration=6.pt" not in names, names
    assert [n for n in names if n.startswith(".checkpoint_iteration=6.pt.") and ".partial" in n], names
    assert read_checkpoint(folder / "checkpoint_iteration=3.pt")["trainer"]["iteration"] == 3
    run, _, seen = synthetic_run(tmp_path, epochs=2, resume=folder / "checkpoint_iteration=3.pt")
    assert checkpoints(run) == [f"checkpoint_iteration={2 * STEPS}.pt"]  # the leftover is removed
    assert len(seen) == 2 * STEPS - 3


def test_new_runs_in_one_folder_get_their_own_folders_and_a_named_one_is_not_reused(tmp_path):
    first, _, _ = synthetic_run(tmp_path, epochs=1)
    before = {p: p.read_bytes() for p in first.checkpoint_dir.iterdir()}
    second, _, _ = synthetic_run(tmp_path, epochs=1)
    assert second.name != first.name and second.checkpoint_dir != first.checkpoint_dir
    assert {p: p.read_bytes() for p in first.checkpoint_dir.iterdir()} == before
    with pytest.raises(InputError, match=f"run '{first.name}' already has outputs"):
        TrainingRun(tmp_path / "models", tmp_path / "eval", name=first.name)
    with pytest.raises(InputError, match="run_name"):
        TrainingRun(tmp_path / "models", tmp_path / "eval", name="../elsewhere")


def test_a_second_training_in_the_same_models_folder_is_refused_until_the_first_ends(tmp_path):
    """Two trainings with one run name, or two automatic names started in the same second, would replace each
    other's checkpoints and model.pt: the second is refused in one line naming the first. A lock left by a killed
    training is taken over."""
    models = tmp_path / "models"
    first = TrainingRun(models, tmp_path / "eval", name="same")
    first.hold()
    for name in ("same", None):
        with pytest.raises(InputError) as refused:
            TrainingRun(models, tmp_path / "eval", name=name).hold()
        assert str(refused.value) == (
            f"{models} is in use by another training (run same, process {os.getpid()}): wait until it ends, or pass "
            "another --ckpt_dir (and --output_dir)"
        )
    first.release()
    TrainingRun(models, tmp_path / "eval", name="same").hold()
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_HOLDING, str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-3000:]
    assert (models / ".training.lock").read_text().startswith("run killed, process ")
    TrainingRun(models, tmp_path / "eval", name="next").hold()


KILLED_WHILE_HOLDING = """
import os, signal, sys
from pathlib import Path
from iternet_monai.engines import TrainingRun
run = TrainingRun(Path(sys.argv[1]) / "models", Path(sys.argv[1]) / "eval", name="killed")
run.hold()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_every_run_writes_its_own_train_stats_and_the_latest_is_found(tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles/iternet/configs/train.json"))
    parser.update({"ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval"), "run_name": "first"})
    parser.parse()
    assert parser.get_parsed_content("stats_file") == str(tmp_path / "eval" / "first" / "train_stats.json")
    parser.get_parsed_content("training_run").release()
    assert latest_stats(tmp_path / "eval") is None
    for age, run in ((100, "first"), (0, "second")):
        (tmp_path / "eval" / run).mkdir(parents=True)
        (tmp_path / "eval" / run / "train_stats.json").write_text("{}")
        os.utime(tmp_path / "eval" / run / "train_stats.json", (1e9 - age, 1e9 - age))
    assert latest_stats(tmp_path / "eval") == tmp_path / "eval" / "second" / "train_stats.json"


def test_every_config_has_the_bundle_root_of_inference_and_training_writes_in_the_current_folder():
    """One bundle_root for every config (the package's bundle, where inference finds its weights); training's
    models and runs go to ./models and ./eval of the folder the command runs in, wherever bundle_root is."""
    from monai.bundle import ConfigParser

    from iternet_monai.engines import default_bundle_root

    roots = {}
    for name in ("inference", "train", "evaluate"):
        parser = ConfigParser()
        parser.read_config(
            [str(REPO / "bundles/iternet/configs/inference.json")] * (name == "evaluate")
            + [str(REPO / f"bundles/iternet/configs/{name}.json")]
        )
        roots[name] = parser.get_parsed_content("bundle_root")
    assert set(roots.values()) == {default_bundle_root()}
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles/iternet/configs/train.json"))
    parser.update({"bundle_root": "/elsewhere"})
    assert (parser.get_parsed_content("ckpt_dir"), parser.get_parsed_content("output_dir")) == ("models", "eval")


def test_a_bad_checkpoint_to_resume_fails_in_one_line_naming_it(tmp_path):
    run, network, _ = synthetic_run(tmp_path, epochs=1)
    good = run.checkpoint_dir / f"checkpoint_iteration={STEPS}.pt"
    empty, truncated, weights = tmp_path / "empty.pt", tmp_path / "truncated.pt", tmp_path / "weights.pt"
    empty.write_bytes(b"")
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    torch.save(network.state_dict(), weights)
    for path, why in ((empty, "empty"), (truncated, "not a readable"), (weights, "not a training checkpoint")):
        with pytest.raises(CheckpointError) as error:
            TrainingRun(tmp_path / "models", tmp_path / "eval", resume=path)
        assert str(error.value).startswith(str(path)) and why in str(error.value)
        assert "\n" not in str(error.value)


def test_a_checkpoint_of_another_network_shape_fails_in_one_line_naming_both(tmp_path):
    run, _, _ = synthetic_run(tmp_path, epochs=1)
    content = read_checkpoint(run.checkpoint_dir / f"checkpoint_iteration={STEPS}.pt")
    content["model"]["0.weight"] = torch.zeros(4, 3, 3, 3)
    torch.save(content, tmp_path / "wider.pt")
    with pytest.raises(CheckpointError, match=r"^\S*wider.pt: the weights are for .*; resume with the network options"):
        synthetic_run(tmp_path, epochs=2, resume=tmp_path / "wider.pt")


def test_a_checkpoint_beyond_the_epochs_asked_for_is_one_line(tmp_path):
    run, _, _ = synthetic_run(tmp_path, epochs=2)
    with pytest.raises(InputError, match="beyond the 1 epochs asked for: pass a larger --epochs"):
        synthetic_run(tmp_path, epochs=1, resume=run.checkpoint_dir / f"checkpoint_iteration={2 * STEPS}.pt")


@pytest.mark.parametrize(
    ("cores", "processes", "on_cpu", "on_gpu"),
    [(1, 1, 0, 0), (2, 1, 1, 1), (3, 1, 2, 2), (8, 1, 4, 7), (16, 1, 4, 12), (64, 1, 4, 12), (16, 4, 3, 3)],
)
def test_default_num_workers_leaves_a_core_to_the_training(monkeypatch, cores, processes, on_cpu, on_gpu):
    """At most 4 workers beside training on the CPU, 12 beside a GPU; torchrun's processes share the cores."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes))
    assert default_num_workers() == on_cpu and default_num_workers("cuda:0") == on_gpu


def test_the_loss_is_read_without_a_warning():
    loss = (torch.ones(3, requires_grad=True) * 2).sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert engine_loss({"loss": loss}) == 6.0
        assert engine_loss([{"loss": loss}, {"loss": loss}]) == 6.0


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_no_worker_processes_where_the_images_are_cached_on_the_gpu(device):
    assert default_num_workers(device, cache_device=device) == 0


def test_the_last_epoch_of_a_schedule_cut_short_is_validated(tmp_path):
    """Validation every 2 epochs of 5: epochs 2 and 4 by the interval, and 5, the last, at the end of training."""
    from monai.data import DataLoader
    from monai.engines import SupervisedEvaluator

    validated: list[int] = []

    def hook(trainer):
        items = [{"image": torch.rand(3, 16, 16), "label": torch.ones(1, 16, 16)} for _ in range(2)]
        evaluator = SupervisedEvaluator(torch.device("cpu"), DataLoader(items, batch_size=1), torch.nn.Identity())
        evaluator.add_event_handler(Events.COMPLETED, lambda e: validated.append(trainer.state.epoch))
        TrainingValidation(evaluator, interval=2).attach(trainer)

    synthetic_run(tmp_path, epochs=5, hook=hook)
    assert validated == [2, 4, 5]


def test_validation_during_training_runs_the_validators_own_inferer(tmp_path):
    """TrainingValidation runs the evaluator as it was made, its inferer included (none is swapped in)."""
    from monai.data import DataLoader
    from monai.engines import SupervisedEvaluator
    from monai.inferers import SimpleInferer

    images: list[tuple[int, ...]] = []

    class CountingInferer(SimpleInferer):
        def __call__(self, inputs, network, *args, **kwargs):
            images.append(tuple(inputs.shape))
            return super().__call__(inputs, network, *args, **kwargs)

    inferer = CountingInferer()
    items = [{"image": torch.rand(3, 16, 16), "label": torch.ones(1, 16, 16)} for _ in range(2)]
    evaluator = SupervisedEvaluator(
        torch.device("cpu"), DataLoader(items, batch_size=1), torch.nn.Identity(), inferer=inferer
    )
    synthetic_run(tmp_path, epochs=2, hook=TrainingValidation(evaluator, interval=1).attach)
    assert evaluator.inferer is inferer and images == [(1, 3, 16, 16)] * 4  # 2 images, 2 validations


@pytest.mark.parametrize(
    ("mode", "device", "inferer", "overlap"),
    [("auto", "cpu", "WholeImageInferer", None), ("auto", "cuda", "BatchedSlidingWindowInferer", 0.75),
     ("sliding_window", "cpu", "BatchedSlidingWindowInferer", 0.75), ("whole_image", "cuda", "WholeImageInferer",
     None)],
)  # fmt: skip
def test_the_validators_inferer_is_the_one_train_json_declares(mode, device, inferer, overlap):
    """validate#evaluator runs validate#inferer, chosen by val_mode: whole image on a CPU, sliding window on CUDA."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles/iternet/configs/train.json"))
    parser.update({"val_mode": mode, "device": device})
    declared = parser.get_parsed_content("validate#inferer")
    assert type(declared).__name__ == inferer and getattr(declared, "overlap", None) == overlap
    assert parser.get("validate#evaluator#inferer").replace("::", "#") == "@validate#inferer"
