"""The ``cohort`` command on Ray (``tox -e cohort``, which installs the ``cohort`` extra): on a Ray started by the
command, on a two-node cluster started here on 127.0.0.1 (joined by its address and through ``ray://``), and killed:
the driver (with every Ray process it started) or one segmenting worker mid-run. Each run's tables equal those of
the same images run without Ray (``--shard 0/1``). The tests stop the Ray processes they started, by their ids."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cohort_helpers import BAD, TABLES, cohort, result_files, result_times, rows, write_manifest

if importlib.util.find_spec("ray") is None:
    pytest.skip('Ray is not installed (pip install -e ".[cohort]"; tox -e cohort runs these)', allow_module_level=True)

import psutil  # noqa: E402  (tox -e cohort installs it)

pytestmark = pytest.mark.slow
OPTIONS = ("--max-pixels", "1000000")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path]:
    """A manifest of a DRIVE and a CHASE_DB1 photograph and four bad files, and its tables from one shard."""
    manifest, _ = write_manifest(tmp_path_factory.mktemp("small"))
    output = tmp_path_factory.mktemp("small_run") / "out"
    assert cohort(manifest, output, "--shard", "0/1", *OPTIONS) == 1
    assert cohort(manifest, output, "--gather") == 1
    return manifest, output


@pytest.fixture(scope="module")
def larger(tmp_path_factory) -> tuple[Path, tuple[str, ...], Path]:
    """A manifest of 4 DRIVE and 4 CHASE_DB1 photographs and four bad files, its good ids, and its tables from one
    shard."""
    manifest, good = write_manifest(tmp_path_factory.mktemp("larger"), drive_images=4, chase_images=4)
    output = tmp_path_factory.mktemp("larger_run") / "out"
    assert cohort(manifest, output, "--shard", "0/1", *OPTIONS) == 1
    assert cohort(manifest, output, "--gather") == 1
    return manifest, good, output


def same_tables(output: Path, expected: Path) -> None:
    for table in TABLES:
        assert (output / table).read_text() == (expected / table).read_text(), table


def test_the_ray_run_equals_the_shards_and_resumes(small, tmp_path):
    manifest, expected = small
    output = tmp_path / "out"
    assert cohort(manifest, output, "--cpus", "2", *OPTIONS) == 1
    same_tables(output, expected)
    before = result_times(output)
    assert cohort(manifest, output, "--cpus", "2", *OPTIONS) == 1
    assert result_times(output) == before


def ray_node(*args: str) -> subprocess.Popen:
    """``ray start --block`` with token authentication (each node with this machine's token, as Ray's docs set up a
    cluster), in a session of its own, so that stopping it stops only the Ray processes it began."""
    ray = Path(sys.executable).with_name("ray")
    return subprocess.Popen(
        [str(ray), "start", "--block", "--disable-usage-stats", *args], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RAY_AUTH_MODE": "token"},
    )  # fmt: skip


def test_a_two_node_ray_cluster_gives_the_same_tables_by_address_and_through_ray_client(small, tmp_path, monkeypatch):
    """A cluster with token authentication (Ray's default) joined as a user joins it: the token on this machine,
    ``RAY_AUTH_MODE`` not set."""
    manifest, expected = small
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    port = 6400 + os.getpid() % 500
    client_port = port + 600
    head = ["--head", f"--port={port}", f"--ray-client-server-port={client_port}", "--include-dashboard=false"]
    nodes = [ray_node(*head, "--num-cpus=1")]
    try:
        time.sleep(15)  # the head's GCS must answer before a worker node joins
        nodes.append(ray_node(f"--address=127.0.0.1:{port}", "--num-cpus=1"))
        time.sleep(15)
        for name, address in (("gcs", f"127.0.0.1:{port}"), ("client", f"ray://127.0.0.1:{client_port}")):
            output = tmp_path / name
            assert cohort(manifest, output, "--address", address, *OPTIONS) == 1, address
            same_tables(output, expected)
    finally:
        for node in reversed(nodes):
            os.killpg(node.pid, signal.SIGTERM)
            node.wait(timeout=60)


def test_a_failed_ray_client_connection_is_one_line_and_leaves_the_process_able_to_start_ray(small, tmp_path, capsys):
    """Nothing answers at the ``ray://`` address: one line names it; then the same process starts Ray here (a failed
    Ray Client connection leaves Ray's client mode on, and a later ``ray.init`` fails, unless Ray is shut down)."""
    from iternet_monai.cohort.ray_run import connect, disconnect

    manifest, _ = small
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = f"ray://127.0.0.1:{unused.getsockname()[1]}"
    assert cohort(manifest, tmp_path / "out", "--address", address, *OPTIONS) == 2
    assert f"iternet-monai: --address {address}: cannot reach a Ray cluster (" in capsys.readouterr().err
    assert connect(None, 1)
    disconnect()


SERVER_FAILED = (
    'Initialization failure from server:\nTraceback (most recent call last):\n  File "proxier.py", line 776\n'
    "RuntimeError: Starting Ray client server failed. See ray_client_server_23000.err for detailed logs."
)


@pytest.mark.parametrize("failures", [1, 3])
def test_a_ray_client_connection_whose_server_lost_its_driver_is_tried_three_times(failures, monkeypatch, capsys):
    """Ray Client's server sometimes loses the process it starts for a connection (ray-project/ray#63202): the
    command connects again, up to three times, and then gives the server's reason in one line."""
    import ray

    from iternet_monai.cohort.ray_run import connect
    from iternet_monai.utils.errors import InputError

    attempts = []

    def init(address: str, **options) -> None:
        attempts.append(address)
        if len(attempts) <= failures:
            raise ConnectionAbortedError(SERVER_FAILED)

    monkeypatch.setattr(ray, "init", init)
    if failures < 3:
        assert connect("ray://head:10001", None)
    else:
        with pytest.raises(InputError, match="server: RuntimeError: Starting Ray client server failed. See ray_client"):
            connect("ray://head:10001", None)
    assert attempts == ["ray://head:10001"] * min(failures + 1, 3)
    assert capsys.readouterr().err.count("trying again (attempt") == min(failures, 2)


def command(manifest: Path, output: Path) -> subprocess.Popen:
    """The user's command in a process of its own (Ray started by it on this machine, two CPUs)."""
    script = Path(sys.executable).with_name("iternet-monai")
    arguments = [str(script), "cohort", str(manifest), "--output", str(output), "--backend", "pytorch"]
    return subprocess.Popen([*arguments, "--cpus", "2", *OPTIONS], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, what: str, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            pytest.fail(f"the run ended or took too long before {what}:\n{output[-3000:]}")
        time.sleep(0.1)


def descendants(process: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_all(processes: list[psutil.Process]) -> None:
    """SIGKILL ``processes`` (by their ids) and wait until they are gone."""
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(processes, timeout=60)


def results_written(output: Path) -> int:
    return len(result_files(output))


def check_complete(output: Path, good: tuple[str, ...], expected: Path) -> None:
    """Every good id once in every table, every bad one once in failures.csv, the same tables as one shard."""
    assert [r["image"] for r in rows(output / "biomarkers.csv")] == list(good)
    assert [r["id"] for r in rows(output / "failures.csv")] == list(BAD)
    same_tables(output, expected)


def test_a_driver_killed_mid_run_loses_only_the_images_in_flight(larger, tmp_path):
    """The driver and every Ray process it started are killed (as when the machine goes down) once 2 of 8 images
    are done; their results are whole, and the same command again computes only the others."""
    manifest, good, expected = larger
    output = tmp_path / "out"
    run = command(manifest, output)
    started: dict[int, psutil.Process] = {}

    def two_done() -> bool:
        started.update({p.pid: p for p in descendants(run)})
        return results_written(output) >= 2

    wait_for(two_done, run, "2 images were done")
    kill_all([psutil.Process(run.pid), *started.values(), *descendants(run)])
    run.wait(timeout=60)
    kept = result_times(output)
    assert 2 <= len(kept) < len(good), "the kill came after the run had finished: a larger cohort is needed"
    for path in result_files(output):
        json.loads(path.read_text())  # no half-written result
    assert cohort(manifest, output, "--cpus", "2", *OPTIONS) == 1
    after = result_times(output)
    assert {name: after[name] for name in kept} == kept  # nothing finished was computed again
    check_complete(output, good, expected)


def test_a_segmenting_worker_killed_mid_run_is_replaced_and_its_images_retried(larger, tmp_path):
    manifest, good, expected = larger
    output = tmp_path / "out"
    run = command(manifest, output)
    workers: list[psutil.Process] = []

    def worker_busy() -> bool:
        workers[:] = [p for p in descendants(run) if "MapWorker(Map(Segmenter))" in " ".join(_cmdline(p))]
        return bool(workers) and results_written(output) >= 1

    wait_for(worker_busy, run, "a segmenting worker was running")
    assert results_written(output) < len(good), "the kill came after the run had finished: a larger cohort is needed"
    kill_all(workers)
    assert run.wait(timeout=900) == 1  # 1: the four bad files, not the killed worker's images
    check_complete(output, good, expected)


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


MEASURE_AFTER_WARM_UP = """
import json, pickle, sys, tempfile
import numpy as np
from PIL import Image
from numba.core.dispatcher import Dispatcher
from iternet_monai.cohort.ray_run import _Measurer
from iternet_monai.cohort.work import CohortSettings

compiled = []
compile_one = Dispatcher.compile
Dispatcher.compile = lambda self, signature: compiled.append(self) or compile_one(self, signature)
measurer = _Measurer(CohortSettings(tempfile.mkdtemp(), "model.pt"))
warm_up = len(compiled)
drive = sys.argv[1]
mask = np.asarray(Image.open(f"{drive}/test/1st_manual/01_manual1.gif")) > 0
photo = np.asarray(Image.open(f"{drive}/test/images/01_test.tif"))
item = {"id": "01_test", "path": f"{drive}/test/images/01_test.tif", "mm_per_pixel": 0.015, "extra": []}
payload = pickle.dumps((mask.astype(np.float32), mask, photo))
row = measurer({"id": "01_test", "item": json.dumps(item), "status": "todo", "key": "k", "payload": payload})
print(row["status"], warm_up, len(compiled) - warm_up, *(m for m in ("torch", "monai") if m in sys.modules))
"""


def test_a_measurer_compiles_what_a_photograph_needs_before_its_first_image_and_imports_no_pytorch(drive):
    """A measuring actor's warm-up (``compile_measures``, a synthetic vessel tree) compiles every numba function that
    measuring and writing a real photograph's maps then calls: counted in a new process, the photograph compiles
    none. Nor does the actor import PyTorch or MONAI (seconds before its first image, with images waiting)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE_AFTER_WARM_UP, str(drive)], capture_output=True, text=True, check=True
    )
    status, warm_up, after, *imported = done.stdout.split()
    assert status == "segmented"
    assert int(warm_up) > 0  # the count sees compilations
    assert int(after) == 0
    assert imported == []
