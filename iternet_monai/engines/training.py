"""Training a user can trust: nothing lost on a kill, a resume that remembers, progress from the first second.

A training is a *run* with a name (its start time, e.g. ``run-20250114-093012``): its resumable checkpoints go to
``<ckpt_dir>/<run>/`` and its TensorBoard logs and ``train_stats.json`` to ``<output_dir>/<run>/``, so runs never
mix and an old run's checkpoint is never picked up by mistake. ``<ckpt_dir>/model.pt`` (best validation metric) and
``model_final.pt`` (the last epoch) are the bundle's models; a new run keeps those of an earlier run as dated copies
before it replaces them, and a training holds ``<ckpt_dir>`` for itself while it runs, so a second training there
is refused instead of replacing the first one's models. Every file is written atomically and an outdated
checkpoint is removed only after its successor is complete.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sized
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.data.utils import set_rnd, worker_init_fn
from monai.handlers import CheckpointSaver, ValidationHandler

from iternet_monai.engines.checkpoints import CheckpointError, check_weights_fit, read_checkpoint, save_atomic
from iternet_monai.handlers.metric_handlers import engine_loss
from iternet_monai.utils.errors import InputError, OutputError, disk_error, error_chain, flag, optional
from iternet_monai.utils.files import atomic_write_json, check_writable_folder, remove_leftovers

__all__ = [
    "default_num_workers",
    "seed_everything",
    "loader_worker_init",
    "other_metrics",
    "final_model_name",
    "AtomicDiskSaver",
    "AtomicCheckpointSaver",
    "TrainingRun",
    "TrainingValidation",
    "TrainingProgress",
    "STATS_FILE",
    "latest_stats",
]

logger = logging.getLogger(__name__)

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Objects a resumable checkpoint must hold; the others (best model, checkpointer, run) are restored when present.
REQUIRED_STATE = ("model", "optimizer", "trainer")
# The file in <ckpt_dir> whose lock a running training holds, naming the run and its process.
LOCK_FILE = ".training.lock"
# A run's schedule and progress (TrainingProgress), in its own folder <output_dir>/<run>/.
STATS_FILE = "train_stats.json"
# train.json with the CPU training recipe merged over it, as the log names it
CPU_RECIPE = "\"['bundles/iternet/configs/train.json','bundles/iternet/configs/train_cpu.json']\""


def latest_stats(output_dir: str | Path) -> Path | None:
    """The ``train_stats.json`` of the run in ``output_dir`` that wrote last, or None before any run wrote one."""
    found = []
    for path in Path(output_dir).glob(f"*/{STATS_FILE}"):
        try:
            found.append((path.stat().st_mtime, path))
        except FileNotFoundError:
            continue
    return max(found)[1] if found else None


def default_num_workers(device: torch.device | str = "cpu", cache_device: torch.device | str = "cpu") -> int:
    """Data loader worker processes for this process's share of the cores (torchrun's ``LOCAL_WORLD_SIZE``
    processes share them), one core staying with the training process: training on a CPU at most 4 (the training
    needs the cores), on a GPU at most 12 (MONAI's augmentation costs about 17 ms of CPU per DRIVE image, so the
    34 steps/s of 8 images an H100 takes need about 5 cores); 0 on one core. 0 too when the images
    are cached on the GPU (``cache_device``): a thread loader augments them there, and worker processes cannot
    share them."""
    if torch.device(cache_device).type == "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cores //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(0, min(12 if torch.device(device).type == "cuda" else 4, cores - 1))


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """MONAI's ``set_determinism(seed)``; unless ``deterministic``, cuDNN then picks its fastest kernels again
    (``set_determinism`` turns benchmarking off), so runs repeat their data and augmentation but not every last
    bit of GPU arithmetic."""
    from monai.utils import set_determinism

    set_determinism(seed=seed)
    if not flag(deterministic, "deterministic"):
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False


def loader_worker_init(worker_id: int) -> None:
    """MONAI's data loader worker set-up, with Ctrl-C left to the training process: a terminal sends it to every
    process, and a worker that dies of it would end the run before it saves its checkpoint. (SIGTERM stays: it
    is how Python's multiprocessing stops workers at exit; :class:`TrainingRun` copes with workers it kills.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker_init_fn(worker_id)


def other_metrics(metrics: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The metric handlers other than the key metric (an evaluator's ``additional_metrics``)."""
    return {name: handler for name, handler in metrics.items() if name != key}


def final_model_name(validation_items: Sized) -> str:
    """The file of the last epoch's network: ``model_final.pt`` beside the best-validated ``model.pt``, or
    ``model.pt`` itself when there are no validation images (the last model is then the only one)."""
    return "model_final.pt" if len(validation_items) else "model.pt"


def _duration(seconds: float) -> str:
    """``12.3 s``, ``3m 20s``, ``40h 2m``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _is_main_process() -> bool:
    return idist.get_rank() == 0


def _plain(value: Any) -> Any:
    """A metric value as a Python number (a checkpoint must load with ``weights_only=True``)."""
    return float(value) if isinstance(value, (np.generic, torch.Tensor)) else value


class AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` writing through :func:`~.checkpoints.save_atomic` (temporary file, fsync,
    rename) and removing an outdated file only after
    the new one is complete: ignite's ``Checkpoint`` asks for the removal first, so a kill between the two would
    leave no checkpoint at all. ``filename`` fixes the name of every file written (MONAI's ``model.pt``)."""

    def __init__(self, dirname: str | Path, filename: str | None = None) -> None:
        super().__init__(dirname, atomic=True, create_dir=True, require_empty=False)
        self.filename = filename
        self._outdated: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        filename = self.filename or filename
        if idist.get_rank() == self.save_on_rank:
            save_atomic(checkpoint, self.dirname / filename)
            for name in self._outdated:
                if name != filename:
                    (self.dirname / name).unlink(missing_ok=True)
        self._outdated.clear()

    def remove(self, filename: str) -> None:
        self._outdated.append(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` writing through :class:`AtomicDiskSaver`. Its best score and file are part of
    the training state (:meth:`state_dict`, with the validator's best metric), so a resumed run replaces
    ``model.pt`` only by a better model. A run that ends in an error writes no final model: its resumable
    checkpoint holds that state, and ``model_final.pt`` means the schedule was completed."""

    def __init__(self, save_dir: str, save_dict: dict, **kwargs: Any) -> None:
        super().__init__(save_dir, save_dict, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = AtomicDiskSaver(save_dir, checkpoint.save_handler.filename)
        self._engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        self._engine = engine

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        raise e

    def state_dict(self) -> dict:
        saved = self._key_metric_checkpoint.state_dict()["_saved"] if self._key_metric_checkpoint else []
        state = self._engine.state if self._engine is not None else None
        return {
            "_saved": [(_plain(priority), name) for priority, name in saved],
            "best_metric": _plain(getattr(state, "best_metric", -1)),
            "best_metric_epoch": int(getattr(state, "best_metric_epoch", -1)),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if self._key_metric_checkpoint is not None:
            self._key_metric_checkpoint.load_state_dict({"_saved": state_dict["_saved"]})
        if self._engine is not None:
            self._engine.state.best_metric = state_dict["best_metric"]
            self._engine.state.best_metric_epoch = state_dict["best_metric_epoch"]


def _dated_copy(path: Path) -> Path:
    """Keep ``path`` under a name with its modification time (``model_20250114-093012.pt``): a hard link, or a
    copy where the file system has none."""
    stamp = datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
    target, number = path.with_name(f"{path.stem}_{stamp}{path.suffix}"), 1
    while target.exists():
        if target.samefile(path):
            return target
        number += 1
        target = path.with_name(f"{path.stem}_{stamp}_{number}{path.suffix}")
    try:
        os.link(path, target)
    except OSError:
        shutil.copy2(path, target)
    return target


class TrainingRun:
    """One training run: its folders, its resumable checkpoint, resuming, interruption and the random stream.

    The resumable checkpoint (``<ckpt_dir>/<run>/checkpoint_iteration=N.pt``: network, optimizer, trainer, best
    model and this run) is written by ignite's ``Checkpoint`` through :class:`AtomicDiskSaver` every
    ``checkpoint_minutes`` (and every ``checkpoint_steps`` steps when set), after each validation that changed the
    best model, at the end, and on SIGINT/SIGTERM, after which the run stops with status 128 + the signal (a
    second signal ends it at once). ``resume`` continues a run in place: same name, same folders, the state of
    every object restored. Each epoch's random stream (shuffling, augmentation, dropout) is derived from ``seed``,
    the process rank and the step the epoch starts at, so a resumed run continues it instead of repeating the
    first epochs' patches.
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
        self.ckpt_dir, self.output_dir = Path(ckpt_dir), Path(output_dir)
        self.seed, self.checkpoint_steps = int(seed), int(checkpoint_steps or 0)
        self.checkpoint_seconds = float(checkpoint_minutes or 0) * 60
        self.resume = None if optional(resume) is None else Path(resume)
        self._resumed_state: dict | None = None
        if self.resume is not None:
            self._resumed_state = read_checkpoint(self.resume)
            missing = [key for key in REQUIRED_STATE if key not in self._resumed_state]
            if missing:
                raise CheckpointError(
                    f"{self.resume}: not a training checkpoint (no {', '.join(missing)}); --resume takes a "
                    "checkpoint_iteration=N.pt of a run (network weights alone cannot continue a training)"
                )
        check_writable_folder(self.ckpt_dir, "--ckpt_dir")
        check_writable_folder(self.output_dir, "--output_dir")
        self.name = self._choose_name(name)
        # training time and patches over every session of the run, kept in its checkpoints: what the weights cost
        earlier = (self._resumed_state or {}).get("run", {})
        self.seconds, self.patches = float(earlier.get("seconds", 0.0)), int(earlier.get("patches", 0))
        self._session_start: float | None = None
        self._lock: IO[str] | None = None  # held from run(): bad inputs found before then leave no folder
        self.stop_signal: int | None = None
        self.checkpointer: Checkpoint | None = None
        self._last_save = time.monotonic()
        self._best_state: Callable[[], Any] = lambda: None
        self._best_at_save: Any = None
        self._previous_handlers: dict[int, Any] = {}

    def _choose_name(self, name: str | None) -> str:
        if optional(name) is not None:
            name = str(name)
            if not RUN_NAME.match(name):
                raise InputError(f"run_name '{name}': use letters, digits, '.', '_' and '-' only")
            if self.resume is None and self._holds_outputs(name):
                raise InputError(
                    f"run '{name}' already has outputs in {self.ckpt_dir / name} or {self.output_dir / name}: "
                    "continue it with --resume <its checkpoint_iteration=N.pt>, or choose another --run_name"
                )
            return name
        stored = (self._resumed_state or {}).get("run", {}).get("name")
        if stored:
            return str(stored)
        name = datetime.now().strftime("run-%Y%m%d-%H%M%S") if _is_main_process() else ""
        if _is_main_process():
            base, number = name, 1
            while self._holds_outputs(name):
                number += 1
                name = f"{base}-{number}"
        return str(idist.broadcast(name, src=0)) if idist.get_world_size() > 1 else name

    def hold(self) -> None:
        """Hold ``<ckpt_dir>`` for this run (the main process), refusing in one line while another training holds
        it; :meth:`run` does this first, once the inputs are loaded and checked, so bad inputs leave no folder."""
        if self._lock is None and _is_main_process():
            self._lock = self._hold_ckpt_dir()

    def _hold_ckpt_dir(self) -> IO[str]:
        """Lock ``<ckpt_dir>`` for this run (``fcntl.flock`` on its lock file, released when the run ends or its
        process dies, however it dies, so a lock file a killed training left is simply taken over), or refuse in
        one line naming the training that holds it: two trainings there would replace each other's models."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = self.ckpt_dir / LOCK_FILE
        while True:
            handle = open(path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise InputError(
                    f"{self.ckpt_dir} is in use by another training ({holder}): wait until it ends, or pass another "
                    "--ckpt_dir (and --output_dir)"
                ) from None
            try:
                if os.path.samestat(os.fstat(handle.fileno()), path.stat()):
                    break
            except FileNotFoundError:
                pass
            handle.close()  # its holder removed the file as we opened it: lock the new one
        handle.truncate(0)
        handle.write(f"run {self.name}, process {os.getpid()}\n")
        handle.flush()
        return handle

    def release(self) -> None:
        """Give up the lock of ``<ckpt_dir>`` and remove its file (the end of :meth:`run` does; a process that ends
        releases the lock too)."""
        if self._lock is not None:
            Path(self._lock.name).unlink(missing_ok=True)
            self._lock.close()
            self._lock = None

    def _holds_outputs(self, name: str) -> bool:
        return any(
            folder.is_dir() and any(folder.iterdir()) for folder in (self.ckpt_dir / name, self.output_dir / name)
        )

    @property
    def checkpoint_dir(self) -> Path:
        """Where this run's resumable checkpoints go."""
        return self.ckpt_dir / self.name

    @property
    def log_dir(self) -> str:
        """This run's TensorBoard folder."""
        return str(self.output_dir / self.name)

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
        if not _is_main_process():
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

    def _keep_earlier_outputs(self) -> None:
        """A new run keeps an earlier run's models as dated copies; the temporary files an interrupted write left
        are removed (no other training writes there: this one holds the lock)."""
        if not _is_main_process():
            return
        if self.resume is None:
            for product in ("model.pt", "model_final.pt"):
                if (self.ckpt_dir / product).is_file():
                    kept = _dated_copy(self.ckpt_dir / product)
                    logger.info(f"{self.ckpt_dir / product} of an earlier training is kept as {kept}")
        for leftover in remove_leftovers(self.ckpt_dir, 0) + remove_leftovers(self.checkpoint_dir, 0):
            logger.info(f"removed {leftover}, left by an interrupted write")

    def run(self, trainer: Engine, state: dict[str, Any]) -> None:
        """Run ``trainer`` with resumable checkpoints of ``state`` (name -> object with ``state_dict``, e.g. the
        network, optimizer, trainer and best-model saver), restoring them first when resuming. Raises
        ``SystemExit(128 + signal)`` after a run stopped by SIGINT/SIGTERM, having saved its checkpoint. The lock of
        ``<ckpt_dir>`` is released at the end, whatever the outcome."""
        try:
            self.hold()
            self._run(trainer, state)
        finally:
            self.release()

    def _run(self, trainer: Engine, state: dict[str, Any]) -> None:
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
        self._keep_earlier_outputs()
        if state.get("best_model") is not None:
            self._best_state = state["best_model"].state_dict
        self._best_at_save = self._best_state()
        trainer.add_event_handler(Events.STARTED, self._started)
        trainer.add_event_handler(Events.EPOCH_STARTED, self._reseed)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._after_step)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._after_epoch)
        trainer.add_event_handler(Events.COMPLETED, self.save)
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
        if self.stop_signal is not None and trainer.state.iteration < trainer.state.epoch_length * (
            trainer.state.max_epochs or 0
        ):
            name = signal.Signals(self.stop_signal).name
            if _is_main_process():
                logger.warning(
                    f"stopped by {name} at epoch {trainer.state.epoch}, iteration {trainer.state.iteration}; "
                    f"continue it: the same command with --resume '{self.checkpointer.last_checkpoint}'"
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
        if _is_main_process():
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
        self.patches += _batch_patches(engine.state.batch)[0] * idist.get_world_size()
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
        if _is_main_process():
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
        if _is_main_process():
            logger.warning(
                f"{signal.Signals(signum).name}: stopping after this step with a checkpoint "
                "(Ctrl-C again stops at once, without one)"
            )


class TrainingValidation(ValidationHandler):
    """MONAI's ``ValidationHandler`` that validates with ``inferer`` (``make_inferer``'s ``auto``: the whole image
    on a CPU, where a sliding window would cost more than the training between validations) and says how far it
    is: when it starts, every ``progress_seconds`` and when it ends. The last epoch is always validated, so the
    epochs after the last ``interval`` of a schedule cut short (a time budget) can still give ``model.pt``."""

    def __init__(
        self,
        validator: Any,
        interval: int,
        inferer: Callable | None = None,
        progress_seconds: float = 30.0,
        epoch_level: bool = True,
        exec_at_start: bool = False,
    ) -> None:
        super().__init__(interval, validator, epoch_level, exec_at_start)
        self.inferer, self.progress_seconds = inferer, float(progress_seconds)
        self._last_log = 0.0

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        if self.inferer is not None:
            self.validator.inferer = self.inferer
        self.validator.add_event_handler(Events.ITERATION_COMPLETED, self._progress)
        if self.epoch_level:
            engine.add_event_handler(Events.COMPLETED, self._validate_last_epoch)

    def _validate_last_epoch(self, engine: Engine) -> None:
        if engine.state.epoch % self.interval:
            self(engine)

    def __call__(self, engine: Engine) -> None:
        images = len(self.validator.data_loader)
        if _is_main_process():
            logger.info(f"validating on {images} images (epoch {engine.state.epoch}) ...")
        start = self._last_log = time.monotonic()
        super().__call__(engine)
        if _is_main_process():
            logger.info(f"validation took {_duration(time.monotonic() - start)}")

    def _progress(self, evaluator: Engine) -> None:
        if time.monotonic() - self._last_log >= self.progress_seconds and _is_main_process():
            self._last_log = time.monotonic()
            logger.info(f"validation: image {evaluator.state.iteration}/{len(self.validator.data_loader)}")


def _batch_patches(batch: Any) -> tuple[int, tuple[int, ...]]:
    """(patches, their spatial shape) of a training batch: a collated dict, or the list of samples MONAI's
    ``decollate`` leaves; (0, ()) for anything else."""
    if isinstance(batch, Mapping) and isinstance(batch.get("image"), torch.Tensor):
        return len(batch["image"]), tuple(batch["image"].shape[2:])
    if isinstance(batch, list) and batch and isinstance(batch[0], Mapping):
        image = batch[0].get("image")
        return len(batch), tuple(image.shape[1:]) if isinstance(image, torch.Tensor) else ()
    return 0, ()


class TrainingProgress:
    """Progress of a training in the log, readable in a terminal, a file or MONAI Label: the schedule at the
    start, the speed measured over the first steps with an estimate of the whole run (and the advice to use a GPU
    when that is hours on a CPU), then every ``interval_seconds`` the epoch, step, loss and time left. Ours:
    ignite's ``ProgressBar`` draws a terminal bar per epoch and estimates nothing beyond it."""

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

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._step)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._keep_to_budget)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write_stats)
        engine.add_event_handler(Events.COMPLETED, self._write_stats)

    def _started(self, engine: Engine) -> None:
        state = engine.state
        self.started_at, self.start_ts = time.monotonic(), time.time()
        self.planned_epochs = self.planned_epochs or state.max_epochs
        self.announced_epochs = state.max_epochs
        self.first_iteration, self.total = state.iteration, state.epoch_length * state.max_epochs
        self.step_seconds = self.boundary_seconds = self.epoch_step_seconds = 0.0
        self.steps_timed = self.boundaries = self.epoch_steps_timed = 0
        self.estimated, self.previous, self.epoch_end = False, None, None
        self.last_log = time.monotonic()
        device = getattr(engine, "device", "cpu")
        self.device = torch.device(device).type if device is not None else "cpu"
        self.patches = self.patches_timed = 0
        if _is_main_process():
            logger.info(
                f"training on {self.device}: {state.max_epochs} epochs x {state.epoch_length} steps, "
                f"{self.total - state.iteration} steps to go; the first step includes the data loader's start-up ..."
            )

    def _epoch_started(self, engine: Engine) -> None:
        now = time.monotonic()
        if self.epoch_end is not None:
            self.boundary_seconds += now - self.epoch_end
            self.boundaries += 1
        self.previous, self.epoch_end = now, None
        self.epoch_step_seconds, self.epoch_steps_timed = 0.0, 0

    def _step(self, engine: Engine) -> None:
        now = time.monotonic()
        patches, shape = _batch_patches(engine.state.batch)
        if engine.state.iteration == self.first_iteration + 1:
            self.patches = patches
            if _is_main_process():
                size = f" ({patches} patches of {'x'.join(map(str, shape))})" if patches and shape else ""
                logger.info(f"first step{size} done in {_duration(now - self.previous)}")
        else:
            self.step_seconds += now - self.previous
            self.epoch_step_seconds += now - self.previous
            self.steps_timed += 1
            self.epoch_steps_timed += 1
            self.patches_timed += patches
        self.previous = now
        measured = self.steps_timed >= self.estimate_steps or (self.steps_timed >= 3 and self.step_seconds >= 30)
        if not self.estimated and measured:
            self._estimate(engine)
        elif now - self.last_log >= self.interval_seconds and self.steps_timed:
            self._report(engine)

    def _epoch_completed(self, engine: Engine) -> None:
        self.epoch_end = time.monotonic()
        if not self.estimated and self.steps_timed:
            self._estimate(engine)

    def _left_seconds(self, engine: Engine) -> float:
        state = engine.state
        steps_left = self.total - state.iteration
        epochs_left = state.max_epochs - state.epoch
        boundary = self.boundary_seconds / self.boundaries if self.boundaries else 0.0
        return steps_left * self.step_seconds / self.steps_timed + epochs_left * boundary

    def _estimate(self, engine: Engine) -> None:
        self.estimated, self.last_log = True, time.monotonic()
        if not _is_main_process():
            return
        per_step = self.step_seconds / self.steps_timed
        whole = self._left_seconds(engine)
        rate = (
            f" ({self.patches_timed / self.step_seconds:.1f} patches/s)"
            if self.patches_timed and self.step_seconds
            else ""
        )
        message = (
            f"speed on this {self.device}: {_duration(per_step)} per step{rate}; the "
            f"{self.total - engine.state.iteration} steps left take about {_duration(whole)}, plus validation"
        )
        if self.budget is not None and whole > self.budget:
            message += f"; the time budget of {_duration(self.budget)} trains the epochs that fit"
        elif whole > 3600 and self.device == "cpu":
            message += (
                ". That is hours on a CPU: a GPU trains this schedule in minutes (docs/benchmarks.md); on a CPU the "
                f"CPU recipe trains a width-8 IterNet in hours (docs/results.md): --config_file {CPU_RECIPE}; "
                "or shorten it with --epochs or --time_budget_minutes"
            )
        logger.info(message)

    def _keep_to_budget(self, engine: Engine) -> None:
        """With a time budget: train the most epochs that fit (same everything else), re-planned after every epoch
        at the speed of the epoch just ended, both ways up to the planned epochs, so a machine busy for a while
        shortens the schedule only while it is busy; validations are counted once they have run."""
        state = engine.state
        if self.budget is None or not self.steps_timed or state.epoch >= state.max_epochs:
            return
        recent = self.epoch_steps_timed >= 3
        per_step = self.epoch_step_seconds / self.epoch_steps_timed if recent else self.step_seconds / self.steps_timed
        per_epoch = state.epoch_length * per_step + (self.boundary_seconds / self.boundaries if self.boundaries else 0)
        left = self.budget - (time.monotonic() - self.started_at)
        fits = min(self.planned_epochs or state.max_epochs, state.epoch + max(0, int(left // per_epoch)))
        if fits != state.max_epochs:
            state.max_epochs = max(state.epoch, fits)
            self.total = state.epoch_length * state.max_epochs
            # said when the plan moves by a twentieth of the schedule since last said (not at every epoch's jitter),
            # and when it ends the training now
            moved = abs(state.max_epochs - self.announced_epochs) >= max(1, (self.planned_epochs or 0) // 20)
            if moved or state.max_epochs == state.epoch:
                self.announced_epochs = state.max_epochs
                if _is_main_process():
                    logger.warning(
                        f"time budget of {_duration(self.budget)}: training {state.max_epochs} of the "
                        f"{self.planned_epochs} planned epochs ({_duration(per_epoch)} per epoch now); everything "
                        "else is unchanged"
                    )

    def stats(self, engine: Engine) -> dict:
        """The schedule and progress so far: what MONAI Label shows in 3D Slicer's progress bar, and what a GPU run
        records of the schedule it ran."""
        state = engine.state
        elapsed = time.monotonic() - self.started_at
        per_step = self.step_seconds / self.steps_timed if self.steps_timed else None
        done = state.epoch >= state.max_epochs
        stats = {
            "epoch": state.epoch,
            "total_epochs": state.max_epochs,
            "planned_epochs": self.planned_epochs,
            "epoch_length": state.epoch_length,
            "iteration": state.iteration,
            "start_ts": int(self.start_ts),
            "total_time" if done else "current_time": _duration(elapsed),
            "seconds": round(elapsed, 1),
            "seconds_per_step": per_step,
            "patches_per_second": self.patches_timed / self.step_seconds
            if self.patches_timed and self.step_seconds
            else None,
            "device": self.device,
        }
        validator_state = getattr(self.validator, "state", None)
        if validator_state is not None and getattr(validator_state, "best_metric", -1) != -1:
            stats["best_metric"] = float(validator_state.best_metric)
            stats["best_metric_epoch"] = int(validator_state.best_metric_epoch)
            stats["key_metric_name"] = validator_state.key_metric_name
        return stats

    def _write_stats(self, engine: Engine) -> None:
        if self.stats_file is not None and _is_main_process():
            self.stats_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.stats_file, self.stats(engine))

    def _report(self, engine: Engine) -> None:
        self.last_log = time.monotonic()
        if not _is_main_process():
            return
        state = engine.state
        step = (state.iteration - 1) % state.epoch_length + 1
        per_step = self.step_seconds / self.steps_timed
        loss_text = f" loss {engine_loss(engine.state.output):.4f};" if engine.state.output else ""
        logger.info(
            f"epoch {state.epoch}/{state.max_epochs} step {step}/{state.epoch_length}:{loss_text} "
            f"{_duration(per_step)}/step; epoch done in {_duration((state.epoch_length - step) * per_step)}, "
            f"training in {_duration(self._left_seconds(engine))}"
        )
