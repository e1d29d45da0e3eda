"""The cohort on Ray (the ``cohort`` extra): one Ray Data stream of the per-image stages of :mod:`.work`. Preparing
(hash, checks, the bundle's ``preprocessing``) and measuring are CPU tasks; segmenting runs in a pool of actors that
each build the network once (on a GPU each with ``gpus_per_worker``). Ray Data's streaming executor holds back the
stages before a slow one, so memory stays bounded however large the cohort. The only module that imports Ray."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from iternet_monai.cohort.manifest import CohortItem
from iternet_monai.cohort.store import CohortFolder
from iternet_monai.cohort.work import CohortSettings, Segmenter, finish, prepare, preprocessing
from iternet_monai.utils.errors import InputError

__all__ = ["RAY_MISSING", "connect", "disconnect", "ray_rows"]

RAY_MISSING = 'the cohort command runs on Ray, which is not installed: pip install -e ".[cohort]" (or use --shard)'


def _item(row: dict[str, Any]) -> CohortItem:
    fields = json.loads(row["item"])
    return CohortItem(fields["id"], fields["path"], fields["mm_per_pixel"], tuple(map(tuple, fields["extra"])))


def _prepare_row(row: dict[str, Any], settings: CohortSettings, output_settings: dict) -> dict[str, Any]:
    out = prepare(_item(row), output_settings, preprocessing(settings.max_pixels), CohortFolder(settings.output_dir))
    return {**out, "item": row["item"]}


def _finish_row(row: dict[str, Any], settings: CohortSettings) -> dict[str, Any]:
    return finish(row, _item(row), settings, CohortFolder(settings.output_dir))


def connect(address: str | None, cpus: int | None) -> bool:
    """Start Ray on this machine (``address`` None, with ``cpus`` CPUs) or join a cluster (``auto``, ``HOST:PORT``,
    ``ray://host:port``); returns whether this call connected (then :func:`disconnect` ends it), not a caller that
    had connected before."""
    try:
        import ray
    except ImportError:
        raise InputError(RAY_MISSING) from None
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR}
    if address is None:
        options["num_cpus"] = cpus
    try:  # "local": a new Ray here, not one that another run left on this machine
        ray.init(address=address or "local", **options)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"--address {address}: cannot reach a Ray cluster" if address else "cannot start Ray on this machine"
        raise InputError(f"{where} ({str(err).splitlines()[0]})") from None
    logging.getLogger("ray").setLevel(logging.ERROR)  # Ray Data's notes say nothing to a user
    return True


def disconnect() -> None:
    """Leave the cluster (and stop the Ray that :func:`connect` started on this machine)."""
    import ray

    ray.shutdown()


def ray_rows(
    items: Sequence[CohortItem],
    settings: CohortSettings,
    output_settings: dict,
    workers: int,
    gpus_per_worker: float,
) -> Iterator[dict[str, Any]]:
    """Each image's finished row (``id``, ``status``, ``reason``) as it completes, in any order.

    Args:
        items: the images.
        settings: the run's settings.
        output_settings: :meth:`~.work.CohortSettings.output_settings` (the key's settings).
        workers: segmenting actors.
        gpus_per_worker: GPUs per actor (0: on the CPU).
    """
    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the command draws its own line
    context.print_on_execution_start = False
    records = [{"item": json.dumps(dataclasses.asdict(item))} for item in items]
    stream = ray.data.from_items(records, override_num_blocks=max(1, min(len(records), 1000)))
    # the CPU tasks ask for half a CPU, the actors for one: that keeps Ray from fusing them into the actors
    stream = stream.map(_prepare_row, fn_args=(settings, output_settings), num_cpus=0.5)
    pool = ray.data.ActorPoolStrategy(size=workers)
    stream = stream.map(Segmenter, fn_constructor_args=(settings,), compute=pool, num_cpus=1, num_gpus=gpus_per_worker)
    stream = stream.map(_finish_row, fn_args=(settings,), num_cpus=0.5)
    for row in stream.iter_rows():
        yield {k: row[k] for k in ("id", "status", "reason")}
