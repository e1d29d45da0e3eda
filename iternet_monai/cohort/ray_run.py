"""The cohort on Ray (the ``cohort`` extra): one Ray Data stream of the per-image stages of :mod:`.work`. Preparing
(hash, checks, the bundle's ``preprocessing``) is a CPU task; segmenting runs in a pool of actors that each build the
network once (on a GPU each with ``gpus_per_worker``), measuring in a pool of CPU actors that each compile the
centreline code once. Ray Data's streaming executor holds back the stages before a slow one, so memory stays bounded
however large the cohort. The only module that imports Ray."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from iternet_monai.cohort.manifest import CohortItem
from iternet_monai.cohort.store import CohortFolder
from iternet_monai.cohort.work import CohortSettings, Segmenter, finish, prepare, preprocessing
from iternet_monai.utils.errors import COMMAND_PREFIX, InputError, print_problem

__all__ = ["RAY_MISSING", "connect", "disconnect", "ray_rows"]

# Ray Client's server (the proxier) sometimes loses the process it forks for a new connection (a gRPC race in
# fork(), ray-project/ray#63202, open in Ray 2.60); each connection gets a new one, so a new attempt succeeds
CLIENT_ATTEMPTS = 3
CLIENT_RETRY = "Ray Client's server failed to start this connection's driver (ray-project/ray#63202); trying again"
RAY_MISSING = 'the cohort command runs on Ray, which is not installed: pip install -e ".[cohort]" (or use --shard)'


def _item(row: dict[str, Any]) -> CohortItem:
    fields = json.loads(row["item"])
    return CohortItem(fields["id"], fields["path"], fields["mm_per_pixel"], tuple(map(tuple, fields["extra"])))


@functools.lru_cache(maxsize=4)
def _output_settings(settings: CohortSettings, weights_sha256: str) -> dict[str, Any]:
    """The run's :meth:`~.work.CohortSettings.output_settings`, resolved once per worker: there, not in the command's
    process, which then starts Ray without importing PyTorch and MONAI (seconds) that a worker imports anyway."""
    return settings.output_settings(weights_sha256)


def _prepare_row(row: dict[str, Any], settings: CohortSettings, weights_sha256: str) -> dict[str, Any]:
    output_settings = _output_settings(settings, weights_sha256)
    out = prepare(_item(row), output_settings, preprocessing(settings.max_pixels), CohortFolder(settings.output_dir))
    return {**out, "item": row["item"]}


class _Measurer:
    """The last stage's actor: measures and writes each segmented row (:func:`~.work.finish`). An actor, not a task,
    as a process's first measurement compiles skan's functions for seconds: an actor does that once, when it starts
    (:func:`~iternet_monai.biomarkers.measure.compile_measures`), where a task worker that Ray Data starts late in
    the run would hold its images while compiling."""

    def __init__(self, settings: CohortSettings) -> None:
        from iternet_monai.biomarkers.measure import compile_measures

        compile_measures()
        self.settings = settings

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return finish(row, _item(row), self.settings, CohortFolder(self.settings.output_dir))


def connect(address: str | None, cpus: int | None) -> bool:
    """Start Ray on this machine (``address`` None, with ``cpus`` CPUs) or join a cluster (``auto``, ``HOST:PORT``,
    ``ray://host:port``); returns whether this call connected (then :func:`disconnect` ends it), not a caller that
    had connected before."""
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")  # Ray Data's notes are not the user's (set before import)
    try:
        import ray
    except ImportError:
        raise InputError(RAY_MISSING) from None
    if ray.is_initialized():
        return False
    logging.getLogger("ray").setLevel(logging.ERROR)  # Ray's and Ray Data's notes say nothing to a user
    # the workers' own output stays in Ray's logs: an image's problem comes back as its failed row
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    if address is None:
        options["num_cpus"] = cpus
    else:
        _cluster_token()
    attempt = 1
    while True:
        try:  # "local": a new Ray here, not one that another run left on this machine
            ray.init(address=address or "local", **options)
            return True
        except (ConnectionError, RuntimeError, ValueError) as err:
            ray.shutdown()  # a failed ray:// connection leaves Ray's client mode on, which breaks a later ray.init
            if attempt == CLIENT_ATTEMPTS or not isinstance(err, ConnectionAbortedError):  # Ray Client's server said no
                raise _connect_error(address, err) from None
        print_problem(f"--address {address}: {CLIENT_RETRY} (attempt {attempt} of {CLIENT_ATTEMPTS})", COMMAND_PREFIX)
        attempt += 1


def _connect_error(address: str | None, err: Exception) -> InputError:
    """One line for a failed :func:`connect`: Ray's first line, and its last where the first only introduces it (Ray
    Client's server sends back its traceback after "Initialization failure from server:")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    reason = f"{lines[0]} {lines[-1]}" if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    if address is None:
        return InputError(f"cannot start Ray on this machine ({reason})")
    token = "a cluster with token authentication needs its token here (ray get-auth-token, RAY_AUTH_TOKEN)"
    return InputError(f"--address {address}: cannot reach a Ray cluster ({reason}; {token})")


def _cluster_token() -> None:
    """Join a cluster with the token authentication it may have (Ray's default for new clusters) as ``ray start``
    joins one: with this machine's token (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN``) unless ``RAY_AUTH_MODE`` says
    otherwise. ``ray.init(address=...)`` alone sends none, and a cluster without authentication ignores it."""
    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def disconnect() -> None:
    """Leave the cluster (and stop the Ray that :func:`connect` started on this machine)."""
    import ray

    ray.shutdown()


def ray_rows(
    items: Sequence[CohortItem],
    settings: CohortSettings,
    weights_sha256: str,
    workers: int,
    gpus_per_worker: float,
) -> Iterator[dict[str, Any]]:
    """Each image's finished row (``id``, ``status``, ``reason``) as it completes, in any order. Through Ray Client
    (``ray://``), where Ray Data cannot run, the stream runs in a :class:`_ClusterDriver` actor on the cluster.

    Args:
        items: the images.
        settings: the run's settings.
        weights_sha256: the weights' sha256 (with the settings, the key of every result).
        workers: segmenting actors.
        gpus_per_worker: GPUs per actor (0: on the CPU).
    """
    import ray
    from ray.util.client import ray as client

    arguments = (items, settings, weights_sha256, workers, gpus_per_worker)
    if not client.is_connected():
        yield from _stream_rows(*arguments)
        return
    driver = ray.remote(num_cpus=0, max_concurrency=2)(_ClusterDriver).remote(*arguments)
    while True:
        for row in ray.get(driver.rows.remote()):
            if isinstance(row, str):  # the stream's error
                raise RuntimeError(row)
            if row is None:
                return
            yield row


def _stream_rows(
    items: Sequence[CohortItem], settings: CohortSettings, weights_sha256: str, workers: int, gpus_per_worker: float
) -> Iterator[dict[str, Any]]:
    """The Ray Data stream of :func:`ray_rows`, in a process with its own connection to the cluster."""
    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the command draws its own line
    context.print_on_execution_start = False
    records = [{"item": json.dumps(dataclasses.asdict(item))} for item in items]
    stream = ray.data.from_items(records, override_num_blocks=max(1, min(len(records), 1000)))
    # the preparing tasks ask for half a CPU, the segmenting actors for one: that keeps Ray from fusing them
    stream = stream.map(_prepare_row, fn_args=(settings, weights_sha256), num_cpus=0.5)
    pool = ray.data.ActorPoolStrategy(size=workers)
    stream = stream.map(Segmenter, fn_constructor_args=(settings,), compute=pool, num_cpus=1, num_gpus=gpus_per_worker)
    # at most as many half-CPU measurers as the CPUs the segmenting actors leave hold, less half a CPU for preparing:
    # seeing images queue while the first measurer compiles, Ray Data's autoscaler would start more, each compiling
    spare = ray.cluster_resources().get("CPU", 1.0) - workers
    measurers = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(2 * spare) - 1))
    stream = stream.map(_Measurer, fn_constructor_args=(settings,), compute=measurers, num_cpus=0.5)
    for row in stream.iter_rows():
        yield {k: row[k] for k in ("id", "status", "reason")}


class _ClusterDriver:
    """The stream run on the cluster for a command connected through Ray Client, whose process Ray Data cannot run
    in (and to which Ray Client returns no generator): a thread runs :func:`_stream_rows`, :meth:`rows` hands the
    rows finished since the last call (ours: Ray has no streaming across Ray Client)."""

    def __init__(self, *arguments: Any) -> None:
        self.finished: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, args=arguments, daemon=True).start()

    def _run(self, *arguments: Any) -> None:
        try:
            for row in _stream_rows(*arguments):
                self.finished.put(row)
        except Exception as err:
            self.finished.put(f"the cohort's stream on the cluster failed: {type(err).__name__}: {err}")
        self.finished.put(None)

    def rows(self, seconds: float = 1.0) -> list:
        """The rows finished since the last call, waiting up to ``seconds`` for one; None ends, a text is an error."""
        try:
            rows = [self.finished.get(timeout=seconds)]
        except queue.Empty:
            return []
        while rows[-1] is not None and not isinstance(rows[-1], str) and not self.finished.empty():
            rows.append(self.finished.get())
        return rows
