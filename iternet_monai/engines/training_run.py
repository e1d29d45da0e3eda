"""Training a user can trust: nothing lost on a kill, a resume that remembers, a random stream that goes on.

Its folders and the lock of the models folder: :class:`~iternet_monai.engines.run_folder.RunFolder`; the savers that
write atomically: :mod:`iternet_monai.engines.checkpoint_savers`.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.data.utils import set_rnd

from iternet_monai.engines.checkpoint_savers import AtomicDiskSaver
from iternet_monai.engines.checkpoints import CheckpointError, check_weights_fit, read_checkpoint
from iternet_monai.engines.run_folder import RunFolder
from iternet_monai.handlers.run_log import batch_patches, is_main_process
from iternet_monai.utils.errors import InputError, OutputError, disk_error, error_chain, optional

__all__ = ["TrainingRun"]

logger = logging.getLogger(__name__)

# Objects a resumable checkpoint must hold; the others (best model, checkpointer, run) are restored when present.
REQUIRED_STATE = ("model", "optimizer", "trainer")


class TrainingRun:
    """One training run: its resumable checkpoint, resuming, interruption and the random stream; its folders are a
    :class:`RunFolder`.

    The resumable checkpoint (``<ckpt_dir>/<run>/checkpoint_iteration=N.pt``: network, optimizer, trainer, best
    model and this run) is written by ignite's ``Checkpoint`` through :class:`AtomicDiskSaver` every
    ``checkpoint_minutes`` (and every ``checkpoint_steps`` steps when set), after each validation that changed the
    best model, at the end, and on SIGINT/SIGTERM, after which the run stops with status 128 + the signal (a
    second signal ends it at once). ``resume`` continues a run in place: same name, same folders, the state of
    every object restored. Each epoch's random stream (shuffling, augmentation, dropout) is derived from ``seed``,
    the process rank and the step the epoch starts at, so a resumed run continues it instead of repeating the
    first epochs' patches.

    Args:
        ckpt_dir: the models folder.
        output_dir: the folder of the runs' TensorBoard logs and progress.
        resume: a ``checkpoint_iteration=N.pt`` to continue from, or None for a new run.
        name: a new run's name (default: its start time).
        seed: the seed of the random stream.
        checkpoint_minutes: minutes between resumable checkpoints (0: off).
        checkpoint_steps: steps between resumable checkpoints (0: off).
    """

    def __init__(
        self,
        ckpt_dir: str | Path,
        output_dir: str | Path,
        resume: str | Path | None = None,
        name: str | None = None,
        seed: int = 0,
        checkpoint_minutes: float = 10.0,
        checkpoint_steps: int = 0,
    ) -> None:
        self.seed, self.checkpoint_steps = int(seed), int(checkpoint_steps or 0)
        self.checkpoint_seconds = float(checkpoint_minutes or 0) * 60
        self.resume = None if optional(resume) is None else Path(resume)
        self._resumed_state = None if self.resume is None else self._read_resumable(self.resume)
        earlier = (self._resumed_state or {}).get("run", {})
        chosen = name if optional(name) is not None else earlier.get("name")
        self.folder = RunFolder(ckpt_dir, output_dir, chosen, resuming=self.resume is not None)
        # training time and patches over every session of the run, kept in its checkpoints: what the weights cost
        self.seconds, self.patches = float(earlier.get("seconds", 0.0)), int(earlier.get("patches", 0))
        self._session_start: float | None = None
        self.stop_signal: int | None = None
        self.checkpointer: Checkpoint | None = None
        self._last_save = time.monotonic()
        self._best_state: Callable[[], Any] = lambda: None
        self._best_at_save: Any = None
        self._previous_handlers: dict[int, Any] = {}

    @staticmethod
    def _read_resumable(path: Path) -> dict:
        content = read_checkpoint(path)
        missing = [key for key in REQUIRED_STATE if key not in content]
        if missing:
            raise CheckpointError(
                f"{path}: not a training checkpoint (no {', '.join(missing)}); --resume takes a "
                "checkpoint_iteration=N.pt of a run (network weights alone cannot continue a training)"
            )
        return content

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def ckpt_dir(self) -> Path:
        return self.folder.ckpt_dir

    @property
    def checkpoint_dir(self) -> Path:
        """Where this run's resumable checkpoints go."""
        return self.folder.checkpoint_dir

    @property
    def log_dir(self) -> str:
        """This run's TensorBoard folder."""
        return self.folder.log_dir

    @property
    def stats_file(self) -> str:
        """This run's ``train_stats.json``."""
        return self.folder.stats_file

    def hold(self) -> None:
        """Hold ``<ckpt_dir>`` for this run (:meth:`RunFolder.hold`); :meth:`run` does this first, once the inputs
        are loaded and checked, so bad inputs leave no folder."""
        self.folder.hold()

    def release(self) -> None:
        """Give up ``<ckpt_dir>`` (:meth:`RunFolder.release`); the end of :meth:`run` does."""
        self.folder.release()

    def state_dict(self) -> dict:
        return {"name": self.name, "seed": self.seed, "seconds": self.training_seconds(), "patches": self.patches}

    def training_seconds(self) -> float:
        """Wall time spent training this run, over all its sessions (validation included)."""
        session = 0.0 if self._session_start is None else time.monotonic() - self._session_start
        return round(self.seconds + session, 3)

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Nothing to restore: the name was read when the run was set up."""

    def prepare(self) -> None:
        """Say what this run is and where it writes, before the images are loaded (which can take minutes)."""
        if not is_main_process():
            return
        origin = f"continues from {self.resume}" if self.resume is not None else "a new run"
        every = [f"every {self.checkpoint_seconds / 60:g} min"] if self.checkpoint_seconds else []
        every += [f"every {self.checkpoint_steps} steps"] if self.checkpoint_steps else []
        logger.info(f"training run {self.name}: {origin}")
        logger.info(
            f"resumable checkpoints: {self.checkpoint_dir} ({', '.join(every + ['after a new best model'])}, at the "
            f"end and on Ctrl-C); best and final models: {self.ckpt_dir}; TensorBoard: {self.log_dir}"
        )
        logger.info("loading the images (a progress bar per dataset follows) ...")

    def run(self, trainer: Engine, state: dict[str, Any]) -> None:
        """Run ``trainer`` with resumable checkpoints of ``state`` (name -> object with ``state_dict``, e.g. the
        network, optimizer, trainer and best-model saver), restoring them first when resuming. Raises
        ``SystemExit(128 + signal)`` after a run stopped by SIGINT/SIGTERM, having saved its checkpoint. The lock of
        ``<ckpt_dir>`` is released at the end, whatever the outcome.

        Args:
            trainer: the trainer to run.
            state: the objects of the resumable checkpoint, by name.
        """
        try:
            self.hold()
            self._set_up(trainer, state)
            self._run(trainer)
        finally:
            self.release()

    def _set_up(self, trainer: Engine, state: dict[str, Any]) -> None:
        """The checkpointer, the restored state when resuming, the earlier models kept, and this run's handlers."""
        if getattr(trainer, "amp_kwargs", {}).get("dtype") == torch.bfloat16 and getattr(trainer, "scaler", None):
            # bf16 needs no loss scaling, and GradScaler's inf check waits for the GPU at every step
            trainer.scaler = torch.amp.GradScaler("cuda", enabled=False)
        to_save = {**state, "run": self}
        self.checkpointer = Checkpoint(
            to_save,
            AtomicDiskSaver(self.checkpoint_dir),
            n_saved=1,
            score_function=lambda engine: engine.state.iteration,
            score_name="iteration",
            include_self=True,
        )
        if self._resumed_state is not None:
            self._restore(trainer, {**to_save, "checkpointer": self.checkpointer})
        self.folder.keep_earlier_outputs()
        if state.get("best_model") is not None:
            self._best_state = state["best_model"].state_dict
        self._best_at_save = self._best_state()
        trainer.add_event_handler(Events.STARTED, self._started)
        trainer.add_event_handler(Events.EPOCH_STARTED, self._reseed)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._after_step)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._after_epoch)
        trainer.add_event_handler(Events.COMPLETED, self.save)

    def _run(self, trainer: Engine) -> None:
        self._install_signal_handlers()
        try:
            trainer.run()
        except Exception as error:
            refused = disk_error(error)  # a library's write (TensorBoard's) names no file: name the run's folders
            named = any(isinstance(e, InputError) for e in error_chain(error))
            if self.stop_signal is None and refused is not None and not named:
                raise OutputError(f"cannot write in {self.ckpt_dir} or {self.log_dir}: {refused.strerror}") from error
            if self.stop_signal is None:
                raise
            # A signal sent to the whole process group (a batch system's SIGTERM) also ends the data loader's
            # workers, and the next batch then fails; the state of the last complete step is still consistent.
            logger.warning(f"{error} (after the stop signal): saving the state of the last complete step")
            self.save(trainer)
        finally:
            self._restore_signal_handlers()
        state = trainer.state
        if self.stop_signal is not None and state.iteration < state.epoch_length * (state.max_epochs or 0):
            if is_main_process():
                logger.warning(
                    f"stopped by {signal.Signals(self.stop_signal).name} at epoch {state.epoch}, iteration "
                    f"{state.iteration}; continue it: the same command with --resume "
                    f"'{self.checkpointer.last_checkpoint}'"  # type: ignore[union-attr]
                )
            raise SystemExit(128 + self.stop_signal)

    def _restore(self, trainer: Engine, to_load: dict[str, Any]) -> None:
        content = self._resumed_state or {}
        network = to_load["model"]
        network = network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network
        check_weights_fit(
            content["model"], network.state_dict(), self.resume, "resume with the network options of the run"
        )
        max_epochs = trainer.state.max_epochs
        restored = {k: v for k, v in to_load.items() if k in content and k != "run"}
        Checkpoint.load_objects(restored, content)
        if max_epochs is not None and trainer.state.epoch > max_epochs:
            raise InputError(
                f"{self.resume} is at epoch {trainer.state.epoch}, beyond the {max_epochs} epochs asked for: "
                "pass a larger --epochs to train longer"
            )
        trainer.state.max_epochs = max_epochs
        self._resumed_state = None  # the state now lives in the objects
        if is_main_process():
            logger.info(
                f"restored {', '.join(k for k in restored if k != 'checkpointer')} from {self.resume}: iteration "
                f"{trainer.state.iteration}, epoch {trainer.state.epoch} of {max_epochs} completed"
            )

    def _started(self, engine: Engine) -> None:
        self._last_save = self._session_start = time.monotonic()

    def _reseed(self, engine: Engine) -> None:
        """Seed the epoch's shuffling, augmentation and dropout from (seed, rank, the step the epoch starts at)."""
        seed = int(np.random.SeedSequence([self.seed, idist.get_rank(), engine.state.iteration]).generate_state(1)[0])
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        loader = getattr(engine, "data_loader", None)
        if loader is not None and getattr(loader, "num_workers", 1) == 0:
            set_rnd(loader.dataset, seed)  # workers are seeded from the torch seed above, the main process here

    def _stop_requested(self) -> bool:
        flag = 1 if self.stop_signal is not None else 0
        if idist.get_world_size() > 1:  # every process must stop at the same step
            flag = int(idist.all_reduce(flag, op="MAX"))
            if flag and self.stop_signal is None:
                self.stop_signal = signal.SIGTERM
        return bool(flag)

    def _after_step(self, engine: Engine) -> None:
        self.patches += batch_patches(engine.state.batch)[0] * idist.get_world_size()
        if engine.state.iteration % engine.state.epoch_length == 0:
            return  # the end of the epoch decides, after its validation
        if self._stop_requested():
            self.save(engine)
            engine.terminate(skip_completed=True)
        elif (self.checkpoint_steps and engine.state.iteration % self.checkpoint_steps == 0) or (
            self.checkpoint_seconds and time.monotonic() - self._last_save >= self.checkpoint_seconds
        ):
            self.save(engine)

    def _after_epoch(self, engine: Engine) -> None:
        last = engine.state.epoch >= (engine.state.max_epochs or 0)
        stop = self._stop_requested() and not last
        elapsed = self.checkpoint_seconds and time.monotonic() - self._last_save >= self.checkpoint_seconds
        if not last and (stop or elapsed or self._best_state() != self._best_at_save):
            self.save(engine)
        if stop:
            engine.terminate(skip_completed=True)

    def save(self, engine: Engine) -> None:
        """Write the resumable checkpoint now (the previous one is removed once this one is complete)."""
        if self.checkpointer is None:
            raise RuntimeError("TrainingRun.save before TrainingRun.run")
        self.checkpointer(engine)
        self._last_save = time.monotonic()
        self._best_at_save = self._best_state()
        if is_main_process():
            logger.info(
                f"saved {self.checkpointer.last_checkpoint} (epoch {engine.state.epoch}, step "
                f"{(engine.state.iteration - 1) % engine.state.epoch_length + 1}/{engine.state.epoch_length})"
            )

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.info("not in the main thread: SIGINT/SIGTERM are left to the host application")
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        self._previous_handlers[signal.SIGCHLD] = signal.getsignal(signal.SIGCHLD)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signal = signum
        for other in (signal.SIGINT, signal.SIGTERM):
            signal.signal(other, signal.SIG_DFL)  # a second signal ends the process at once
        # PyTorch's SIGCHLD handler raises wherever the process is when a worker dies (as it does when the
        # signal went to the whole process group); the step in progress must finish, so a dead worker is only
        # noticed at the next batch, which is never asked for.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if is_main_process():
            logger.warning(
                f"{signal.Signals(signum).name}: stopping after this step with a checkpoint "
                "(Ctrl-C again stops at once, without one)"
            )
