"""Progress and the time budget: an estimate from the first steps, the most epochs that fit, planned both ways."""

import json
import logging
import time
from collections.abc import Callable

import pytest
import torch
from conftest import STEPS, synthetic_run
from ignite.engine import Engine, Events

from iternet_monai.handlers import TimeBudget, TrainingProgress


def test_progress_from_the_first_step_with_an_estimate_and_the_advice_for_hours(tmp_path, caplog, monkeypatch):
    def attach_progress(trainer):
        TrainingProgress(interval_seconds=0, estimate_steps=3).attach(trainer)

    with caplog.at_level(logging.INFO, logger="iternet_monai"):
        synthetic_run(tmp_path / "fast", epochs=2, hook=attach_progress)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("iternet_monai")]
    assert lines[0].startswith("training run run-") and "loading the images" in lines[2]
    assert any(line.startswith("training on cpu: 2 epochs x 4 steps, 8 steps to go") for line in lines)
    assert any(line.startswith("first step (2 patches of 16x16) done in") for line in lines)
    assert any(line.startswith("speed on this cpu:") and "patches/s)" in line and "hours" not in line for line in lines)
    assert any(line.startswith("epoch 1/2 step 3/4: loss ") and "training in" in line for line in lines)
    caplog.clear()
    clock = iter(range(0, 10**9, 1000))  # every reading of the clock is 1000 s later: a very slow device
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    with caplog.at_level(logging.INFO, logger="iternet_monai"):
        synthetic_run(tmp_path / "slow", epochs=2, hook=attach_progress)
    estimate = [r.getMessage() for r in caplog.records if r.getMessage().startswith("speed on this cpu")]
    assert len(estimate) == 1 and "That is hours on a CPU: a GPU trains this schedule in minutes" in estimate[0]
    assert "configs/train_cpu.json" in estimate[0]  # the CPU recipe, named where a CPU user needs it


def steps_taking(monkeypatch, seconds: Callable[[int], float]) -> Callable[[Engine], None]:
    """A clock on which each training step takes ``seconds(epoch)`` and everything else next to nothing (a
    microsecond a reading: waits with a timeout need a clock that moves); returns the hook that attaches it to a
    trainer."""
    now = [0.0]

    def monotonic() -> float:
        now[0] += 1e-6
        return now[0]

    monkeypatch.setattr(time, "monotonic", monotonic)

    def attach(trainer: Engine) -> None:
        trainer.add_event_handler(
            Events.ITERATION_STARTED, lambda e: now.__setitem__(0, now[0] + seconds(e.state.epoch))
        )

    return attach


def test_a_time_budget_trains_the_most_epochs_that_fit_and_records_the_schedule(tmp_path, monkeypatch):
    """Steps of 1 s, epochs of 4 steps: a budget of 63 s holds 15 of the 40 planned epochs; the stats file records
    what ran."""
    stats_file = tmp_path / "eval" / "train_stats.json"
    clock = steps_taking(monkeypatch, lambda epoch: 1.0)

    def attach(trainer):
        clock(trainer)
        TimeBudget(minutes=1.05).attach(trainer)
        TrainingProgress(interval_seconds=10**6, time_budget_minutes=1.05, stats_file=stats_file).attach(trainer)

    _, _, batches = synthetic_run(tmp_path, epochs=40, hook=attach)
    stats = json.loads(stats_file.read_text())
    assert stats["planned_epochs"] == 40 and stats["total_epochs"] == stats["epoch"] == 63 // (STEPS * 1)
    assert len(batches) == STEPS * 15 and stats["seconds"] == pytest.approx(60, abs=0.1)


def test_the_time_budget_handler_alone_changes_the_schedule(tmp_path, monkeypatch):
    """TrainingProgress reports a time budget but keeps the schedule: without TimeBudget all 40 epochs run."""
    stats_file = tmp_path / "stats.json"
    clock = steps_taking(monkeypatch, lambda epoch: 1.0)

    def attach(trainer):
        clock(trainer)
        TrainingProgress(interval_seconds=10**6, time_budget_minutes=1, stats_file=stats_file).attach(trainer)

    _, _, batches = synthetic_run(tmp_path, epochs=40, hook=attach)
    stats = json.loads(stats_file.read_text())
    assert stats["total_epochs"] == stats["planned_epochs"] == 40 and len(batches) == STEPS * 40


def test_a_time_budget_plans_more_epochs_again_when_the_machine_is_faster_again(tmp_path, monkeypatch):
    """A machine busy at the start (steps of 2 s in the first epoch, then 0.2 s): the schedule cut after the first
    epoch (123 s hold 15 epochs of 8 s) grows again once the steps are fast, instead of ending the run early."""
    clock = steps_taking(monkeypatch, lambda epoch: 2.0 if epoch == 1 else 0.2)
    plans: list[int] = []

    def attach(trainer):
        clock(trainer)
        TimeBudget(minutes=2.05).attach(trainer)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: plans.append(e.state.max_epochs))

    synthetic_run(tmp_path, epochs=40, hook=attach)
    assert plans[0] == 15 and plans[-1] == 40 and len(plans) == 40  # all 40 epochs ran, not the first plan's


def test_the_last_minutes_of_a_time_budget_train_at_the_final_learning_rate(tmp_path, monkeypatch):
    """Steps of 1 s, a budget of 63 s whose last 15 s train at 1e-3: the steps starting with at most 15 s left
    (from the 48th s on) run at the final rate, the earlier ones at the optimizer's own 1e-2; without a final
    rate the optimizer keeps its own all through."""
    clock = steps_taking(monkeypatch, lambda epoch: 1.0)

    def learning_rates(**final) -> list[float]:
        rates: list[float] = []

        def attach(trainer):
            clock(trainer)
            TimeBudget(minutes=1.05, optimizer=trainer.optimizer, **final).attach(trainer)
            trainer.add_event_handler(
                Events.ITERATION_COMPLETED, lambda e: rates.append(e.optimizer.param_groups[0]["lr"])
            )

        synthetic_run(tmp_path / str(len(final)), epochs=40, hook=attach)
        return rates

    rates = learning_rates(final_minutes=0.25, final_learning_rate=1e-3)
    first_final = rates.index(1e-3)
    assert set(rates) == {1e-2, 1e-3} and rates[first_final:] == [1e-3] * (len(rates) - first_final)
    assert 47 <= first_final <= 48 and len(rates) == STEPS * 15
    assert set(learning_rates()) == {1e-2}


def test_patches_per_second_counts_the_patches_of_every_step(tmp_path):
    """An epoch of 5 images in batches of 2 ends with a batch of 1 (as 20 DRIVE images in batches of 8 end with 4):
    the rate counts the patches each timed step had, not the first step's batch size for all."""
    from monai.data import DataLoader
    from monai.engines import SupervisedTrainer

    items = [{"image": torch.rand(3, 8, 8), "label": torch.ones(1, 8, 8)} for _ in range(5)]
    network = torch.nn.Conv2d(3, 1, 1)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=4,
        train_data_loader=DataLoader(items, batch_size=2, shuffle=False),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), 0.1),
        loss_function=torch.nn.BCEWithLogitsLoss(),
    )
    stats_file = tmp_path / "stats.json"
    TrainingProgress(interval_seconds=10**6, stats_file=stats_file).attach(trainer)
    trainer.run()
    stats = json.loads(stats_file.read_text())
    timed = [2, 1] + [2, 2, 1] * 3  # the 12 steps' batches but the first, which includes the loader's start
    assert stats["iteration"] == 12
    assert stats["patches_per_second"] * stats["seconds_per_step"] == pytest.approx(sum(timed) / len(timed))
