"""A training run's name and folders, and the lock a training holds on its models folder.

A training is a *run* with a name (its start time, e.g. ``run-20250114-093012``): its resumable checkpoints go to
``<ckpt_dir>/<run>/`` and its TensorBoard logs and ``train_stats.json`` to ``<output_dir>/<run>/``, so runs never
mix and an old run's checkpoint is never picked up by mistake. ``<ckpt_dir>/model.pt`` and ``model_final.pt`` are
the bundle's models; a new run keeps those of an earlier run as dated copies before it replaces them, and a training
holds ``<ckpt_dir>`` for itself while it runs, so a second training there is refused instead of replacing the first
one's models.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import IO

import ignite.distributed as idist

from iternet_monai.engines.training import STATS_FILE
from iternet_monai.handlers.run_log import is_main_process
from iternet_monai.utils.errors import InputError, optional
from iternet_monai.utils.files import check_writable_folder, remove_leftovers

__all__ = ["RunFolder", "LOCK_FILE"]

logger = logging.getLogger(__name__)

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# The file in <ckpt_dir> whose lock a running training holds, naming the run and its process.
LOCK_FILE = ".training.lock"


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


class RunFolder:
    """The folders of one run and the lock of its models folder.

    Args:
        ckpt_dir: the models folder (``model.pt``, ``model_final.pt``, a folder of resumable checkpoints per run).
        output_dir: the folder of the runs' TensorBoard logs and ``train_stats.json``.
        name: the run's name; None names a new run after its start time.
        resuming: whether the run continues (its named folders may then hold outputs).

    Raises:
        InputError: for a folder that cannot be written, a name with other characters than letters, digits, '.',
            '_' and '-', or the name of a run that has outputs when not ``resuming``.
    """

    def __init__(self, ckpt_dir: str | Path, output_dir: str | Path, name: str | None, resuming: bool) -> None:
        self.ckpt_dir, self.output_dir, self.resuming = Path(ckpt_dir), Path(output_dir), resuming
        check_writable_folder(self.ckpt_dir, "--ckpt_dir")
        check_writable_folder(self.output_dir, "--output_dir")
        self.name = self._check_name(str(name)) if optional(name) is not None else self._new_name()
        self._lock: IO[str] | None = None

    def _check_name(self, name: str) -> str:
        if not RUN_NAME.match(name):
            raise InputError(f"run_name '{name}': use letters, digits, '.', '_' and '-' only")
        if not self.resuming and self.holds_outputs(name):
            raise InputError(
                f"run '{name}' already has outputs in {self.ckpt_dir / name} or {self.output_dir / name}: "
                "continue it with --resume <its checkpoint_iteration=N.pt>, or choose another --run_name"
            )
        return name

    def _new_name(self) -> str:
        """The start time, numbered where a run of that name has outputs; the main process's for every process."""
        name = ""
        if is_main_process():
            name = base = datetime.now().strftime("run-%Y%m%d-%H%M%S")
            number = 1
            while self.holds_outputs(name):
                number += 1
                name = f"{base}-{number}"
        return str(idist.broadcast(name, src=0)) if idist.get_world_size() > 1 else name

    def holds_outputs(self, name: str) -> bool:
        """Whether run ``name`` has files in its folders."""
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

    @property
    def stats_file(self) -> str:
        """This run's schedule and progress (:class:`~iternet_monai.handlers.TrainingProgress`)."""
        return str(self.output_dir / self.name / STATS_FILE)

    def hold(self) -> None:
        """Hold ``<ckpt_dir>`` for this run (the main process), refusing in one line while another training holds
        it. Locked with ``fcntl.flock`` on its lock file, released when the run ends or its process dies, however
        it dies, so a lock file a killed training left is simply taken over."""
        if self._lock is None and is_main_process():
            self._lock = self._lock_ckpt_dir()

    def _lock_ckpt_dir(self) -> IO[str]:
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
        """Give up the lock of ``<ckpt_dir>`` and remove its file (a process that ends releases the lock too)."""
        if self._lock is not None:
            Path(self._lock.name).unlink(missing_ok=True)
            self._lock.close()
            self._lock = None

    def keep_earlier_outputs(self) -> None:
        """A new run keeps an earlier run's models as dated copies; the temporary files an interrupted write left
        are removed (no other training writes there while this one holds the lock)."""
        if not is_main_process():
            return
        if not self.resuming:
            for product in ("model.pt", "model_final.pt"):
                if (self.ckpt_dir / product).is_file():
                    kept = _dated_copy(self.ckpt_dir / product)
                    logger.info(f"{self.ckpt_dir / product} of an earlier training is kept as {kept}")
        for leftover in remove_leftovers(self.ckpt_dir, 0) + remove_leftovers(self.checkpoint_dir, 0):
            logger.info(f"removed {leftover}, left by an interrupted write")
