"""A training's progress in the log and in its ``train_stats.json``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from iternet_monai.handlers.run_log import StepTimer, batch_patches, duration, engine_loss, is_main_process
from iternet_monai.utils.files import atomic_write_json

__all__ = ["TrainingProgress", "CPU_RECIPE"]

logger = logging.getLogger(__name__)

# train.json with the CPU training recipe merged over it, as the log names it
CPU_RECIPE = "\"['bundles/iternet/configs/train.json','bundles/iternet/configs/train_cpu.json']\""


class TrainingProgress:
    """Progress of a training in the log, readable in a terminal, a file or MONAI Label: the schedule at the
    start, the speed measured over the first steps with an estimate of the whole run (and the advice to use a GPU
    when that is hours on a CPU), then every ``interval_seconds`` the epoch, step, loss and time left; the schedule
    and progress in ``stats_file`` after every epoch. It reports the schedule in force and changes nothing
    (:class:`~iternet_monai.handlers.TimeBudget` re-plans it). Ours: ignite's ``ProgressBar`` draws a terminal bar
    per epoch and estimates nothing beyond it.

    Args:
        interval_seconds: seconds between progress lines.
        estimate_steps: steps timed before the estimate of the whole run (sooner when 3 steps took 30 s).
        time_budget_minutes: the run's time budget, named in the estimate when the schedule does not fit it.
        stats_file: where the schedule and progress are written (``train_stats.json``); None writes none.
        validator: the evaluator whose best metric the stats include.
    """

    def __init__(
        self,
        interval_seconds: float = 30.0,
        estimate_steps: int = 20,
        time_budget_minutes: float | None = None,
        stats_file: str | Path | None = None,
        validator: Engine | None = None,
    ) -> None:
        self.interval_seconds, self.estimate_steps = float(interval_seconds), int(estimate_steps)
        self.budget = None if time_budget_minutes is None else 60.0 * float(time_budget_minutes)
        self.stats_file = None if stats_file is None else Path(stats_file)
        self.validator = validator
        self.planned_epochs: int | None = None
        self.timer = StepTimer()

    def attach(self, engine: Engine) -> None:
        self.timer.attach(engine)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._step)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._write_stats)

    def _started(self, engine: Engine) -> None:
        state = engine.state
        self.start_ts = time.time()
        self.planned_epochs = self.planned_epochs or state.max_epochs
        self.estimated, self.last_log = False, self.timer.started_at
        device = getattr(engine, "device", "cpu")
        self.device = torch.device(device).type if device is not None else "cpu"
        if is_main_process():
            logger.info(
                f"training on {self.device}: {state.max_epochs} epochs x {state.epoch_length} steps, "
                f"{state.epoch_length * state.max_epochs - state.iteration} steps to go; the first step includes "
                "the data loader's start-up ..."
            )

    def _step(self, engine: Engine) -> None:
        timer = self.timer
        if timer.is_first_step(engine) and is_main_process():
            shape = "x".join(map(str, batch_patches(engine.state.batch)[1]))
            size = f" ({timer.first_patches} patches of {shape})" if timer.first_patches and shape else ""
            logger.info(f"first step{size} done in {duration(timer.last_step_seconds)}")
        measured = timer.steps_timed >= self.estimate_steps or (timer.steps_timed >= 3 and timer.step_seconds >= 30)
        if not self.estimated and measured:
            self._estimate(engine)
        elif timer.previous - self.last_log >= self.interval_seconds and timer.steps_timed:
            self._report(engine)

    def _epoch_completed(self, engine: Engine) -> None:
        if not self.estimated and self.timer.steps_timed:
            self._estimate(engine)
        self._write_stats(engine)

    def _estimate(self, engine: Engine) -> None:
        self.estimated, self.last_log = True, self.timer.previous
        if not is_main_process():
            return
        whole, rate = self.timer.seconds_left(engine), self.timer.patches_per_second()
        steps_left = engine.state.epoch_length * engine.state.max_epochs - engine.state.iteration
        message = (
            f"speed on this {self.device}: {duration(self.timer.per_step() or 0.0)} per step"
            + (f" ({rate:.1f} patches/s)" if rate else "")
            + f"; the {steps_left} steps left take about {duration(whole)}, plus validation"
        )
        if self.budget is not None and whole > self.budget:
            message += f"; the time budget of {duration(self.budget)} trains the epochs that fit"
        elif whole > 3600 and self.device == "cpu":
            message += (
                ". That is hours on a CPU: a GPU trains this schedule in minutes (docs/benchmarks.md); on a CPU the "
                f"CPU recipe trains a width-8 IterNet in hours (docs/results.md): --config_file {CPU_RECIPE}; "
                "or shorten it with --epochs or --time_budget_minutes"
            )
        logger.info(message)

    def _report(self, engine: Engine) -> None:
        self.last_log = self.timer.previous
        if not is_main_process():
            return
        state = engine.state
        step = (state.iteration - 1) % state.epoch_length + 1
        per_step = self.timer.per_step() or 0.0
        loss_text = f" loss {engine_loss(state.output):.4f};" if state.output else ""
        logger.info(
            f"epoch {state.epoch}/{state.max_epochs} step {step}/{state.epoch_length}:{loss_text} "
            f"{duration(per_step)}/step; epoch done in {duration((state.epoch_length - step) * per_step)}, "
            f"training in {duration(self.timer.seconds_left(engine))}"
        )

    def stats(self, engine: Engine) -> dict:
        """The schedule and progress so far: what MONAI Label shows in 3D Slicer's progress bar, and what a GPU run
        records of the schedule it ran."""
        state = engine.state
        elapsed = self.timer.elapsed()
        stats = {
            "epoch": state.epoch,
            "total_epochs": state.max_epochs,
            "planned_epochs": self.planned_epochs,
            "epoch_length": state.epoch_length,
            "iteration": state.iteration,
            "start_ts": int(self.start_ts),
            "total_time" if state.epoch >= state.max_epochs else "current_time": duration(elapsed),
            "seconds": round(elapsed, 1),
            "seconds_per_step": self.timer.per_step(),
            "patches_per_second": self.timer.patches_per_second(),
            "device": self.device,
        }
        validator_state = getattr(self.validator, "state", None)
        if validator_state is not None and getattr(validator_state, "best_metric", -1) != -1:
            stats["best_metric"] = float(validator_state.best_metric)
            stats["best_metric_epoch"] = int(validator_state.best_metric_epoch)
            stats["key_metric_name"] = validator_state.key_metric_name
        return stats

    def _write_stats(self, engine: Engine) -> None:
        if self.stats_file is not None and is_main_process():
            self.stats_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.stats_file, self.stats(engine))
