"""The whole GPU job in one command: train the paper's DRIVE schedule with the user's command, evaluate the 20 test
images (whole image and stride 3; inside the FoV and the whole image; and with the released code's resized ground
truth, as the paper's tables), time inference and training, and write at most five files to OUT_DIR.

    release/gpu_run.sh [--smoke] OUT_DIR        (installs carried wheels, then runs this)

Every step runs even when an earlier one failed; the failures are in ``results.json``, which is rewritten after every
step, so a run killed from outside still leaves what it measured. Training has a time budget (``--train-minutes``):
when the speed measured over the first steps says the paper's 200 epochs will not fit, the bundle trains the most
epochs that fit, same everything else, and ``results.json`` records the schedule it ran. Should training fail, the
rest of the budget goes to the other ``TRAINING_ATTEMPTS`` (the training images augmented in CPU worker processes,
the bundle's default, or on the GPU by one thread; then fp32); which loading goes first is measured at the start
(``benchmarks/loader_speed.py``). The
whole job keeps to ``--deadline-minutes``: each step gets at most the time left, and a step that no longer fits is
skipped and recorded as such.
Stride 3 is timed with the batched stitching (the default) and with MONAI's own loop, plain and buffered.
``--smoke`` runs the same steps on the CPU with a tiny network, 2 training and 2 test images, 128-pixel windows at
stride 32 instead of 3, in under 3 minutes (a test runs it, so this script cannot rot).

OUT_DIR gets: ``model_fp16.pt`` (the weights to ship: float16 state dict of the best validation model),
``results.json`` (schedule, times, speeds, the paper's Table 1 beside ours, sha256, failures), ``metrics.json`` (each
evaluation's full metrics.json), ``train.log`` and ``speed.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from records import PAPER, SCORES, VARIANTS, evaluate_command, ship_weights  # noqa: E402

# What training tries while the time budget lasts: the bundle's defaults (images augmented by CPU worker processes,
# bf16) and the images cached and augmented on the GPU by one thread, the faster loader first (loader_order), then the
# defaults in fp32. A later one runs only after a failure.
TRAINING_ATTEMPTS = {
    "default": [],  # the training images augmented in CPU worker processes
    "gpu_thread": ["--cache_device", "@device", "--train#dataloader#_target_", "ThreadDataLoader"],
    "default_fp32": ["--amp", "false"],
}
MIN_TRAIN_MINUTES = 1.0  # a fallback with less of the budget left than this is not started
# Training prints progress every 30 s (progress_seconds), validation too: this long without a line means it hangs.
STALL_SECONDS = 150
SMOKE_TRAINING = [
    "--network_def#features", "4", "--patch_size", "[64,64]", "--batch_size", "4", "--num_patches", "2",
    "--steps_per_epoch", "2", "--epochs", "2", "--val_interval", "1", "--sw_overlap", "0.0", "--device", "cpu",
]  # fmt: skip


# Lines of a step's output that are shown as it runs (the rest goes to its log file).
PROGRESS_WORDS = ("speed on", "time budget", "epoch ", "Metrics", "wrote", "iternet:", "validation took")


def log(message: str) -> None:
    print(f"[gpu_run {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Job:
    """The steps of the run, each timed and recorded; a failed step is recorded and the next one still runs. With a
    ``deadline`` (seconds from now) every step gets at most the time left, less ``RESERVE_SECONDS`` for writing the
    results; a step with less than ``min_seconds`` left is skipped and recorded."""

    RESERVE_SECONDS = 15.0

    def __init__(self, deadline: float | None = None) -> None:
        self.steps: dict[str, dict] = {}
        self.failures: list[dict] = []
        self.deadline = None if deadline is None else time.monotonic() + deadline

    def seconds_left(self) -> float:
        """Seconds a step may still take."""
        return math.inf if self.deadline is None else self.deadline - time.monotonic() - self.RESERVE_SECONDS

    def allowed(self, name: str, timeout: float | None, min_seconds: float = 10.0) -> float | None:
        """The timeout step ``name`` runs under (None: none), or 0 when it does not fit and is recorded as skipped."""
        allowed = min(math.inf if timeout is None else timeout, self.seconds_left())
        if allowed < min_seconds:
            self.steps[name] = {"skipped": True}
            self.failures.append({"step": name, "skipped": f"{max(0.0, allowed):.0f} s left before the deadline"})
            log(f"{name}: SKIPPED, {max(0.0, allowed):.0f} s left before the deadline")
            return 0
        return None if allowed == math.inf else allowed

    def run(
        self, name: str, command: list[str], log_file: Path | None = None, timeout: float | None = None,
        min_seconds: float = 10.0, stall_seconds: float | None = None,
    ) -> bool:  # fmt: skip
        """Run ``command``, its output to ``log_file`` (progress lines also to the console); it is killed past
        ``timeout`` or after ``stall_seconds`` without a line of output (a hung data loader, say)."""
        timeout = self.allowed(name, timeout, min_seconds)
        if timeout == 0:
            return False
        log(f"{name}: {' '.join(command)}")
        start = time.monotonic()
        tail: list[str] = []
        with open(log_file or os.devnull, "a") as sink:
            try:
                process = subprocess.Popen(
                    command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
                )
            except OSError as error:
                code, tail = -1, [f"{type(error).__name__}: {error}"]
            else:
                last_output, why_killed = [time.monotonic()], []

                def watch() -> None:
                    while process.poll() is None:
                        now = time.monotonic()
                        if timeout is not None and now - start > timeout:
                            why_killed.append(f"killed after its timeout of {timeout:.0f} s")
                        elif stall_seconds is not None and now - last_output[0] > stall_seconds:
                            why_killed.append(f"killed after {stall_seconds:.0f} s without output")
                        if why_killed:
                            process.kill()
                            return
                        time.sleep(0.5)

                threading.Thread(target=watch, daemon=True).start()
                for line in process.stdout:  # ends when the process does, or is killed
                    last_output[0] = time.monotonic()
                    sink.write(line)
                    tail = (tail + [line.rstrip()])[-25:]
                    if any(word in line for word in PROGRESS_WORDS):
                        print(f"  {line.rstrip()[:220]}", flush=True)
                code = process.wait()
                tail += why_killed
        seconds = round(time.monotonic() - start, 1)
        self.steps[name] = {"seconds": seconds, "returncode": code}
        if code != 0:
            self.failures.append({"step": name, "returncode": code, "output_tail": tail})
            log(f"{name}: FAILED ({code}) after {seconds} s; the next steps still run")
        else:
            log(f"{name}: done in {seconds} s")
        return code == 0

    def call(self, name: str, function, *args):
        start = time.monotonic()
        try:
            value = function(*args)
        except Exception as error:  # noqa: BLE001 - the run must finish and say what failed
            self.failures.append({"step": name, "error": f"{type(error).__name__}: {error}"})
            log(f"{name}: FAILED: {error}")
            value = None
        self.steps[name] = {"seconds": round(time.monotonic() - start, 1), "ok": value is not None}
        return value


def drive_folder() -> Path:
    for candidate in (
        REPO / "device_data" / "DRIVE",
        Path(os.environ.get("ITERNET_SHARED_DATA", REPO.parent / "shared" / "data")) / "DRIVE",
    ):
        if (candidate / "training" / "images").is_dir():
            return candidate
    raise SystemExit("gpu_run: no DRIVE copy in device_data/DRIVE or $ITERNET_SHARED_DATA/DRIVE")


def smoke_datalist(folder: Path) -> Path:
    from iternet_monai.data import builtin_datalist

    content = json.loads(Path(builtin_datalist("drive")).read_text())
    smoke = {"training": content["training"][:2], "validation": content["training"][:2]}
    path = folder / "drive_smoke.json"
    path.write_text(json.dumps({**smoke, "testing": content["testing"][:2]}))
    return path


def loader_order(job: Job, args: argparse.Namespace, work: Path, drive: Path, datalist: Path) -> dict:
    """Time the training loader of each way of loading (``benchmarks/loader_speed.py``, a few seconds each): the
    bundle's default augments in CPU worker processes, the GPU-side loading runs MONAI's transforms in one Python
    thread, and which keeps up better with the network depends on this machine's cores. Returns the patches/s of
    each (0 where the loader failed) and the order the training attempts are tried in: the faster loading first."""
    speeds = {}
    for attempt in ("default", "gpu_thread"):
        output = work / f"loader_{attempt}.json"
        command = [
            sys.executable, "benchmarks/loader_speed.py", "--dataset-dir", str(drive), "--datalist", str(datalist),
            "--seconds", "2" if args.smoke else "8", "--output", str(output), "--",
            *(SMOKE_TRAINING if args.smoke else []), *TRAINING_ATTEMPTS[attempt],
        ]  # fmt: skip
        job.run(f"loader_{attempt}", command, timeout=90, min_seconds=30)
        speeds[attempt] = read_json(output)["patches_per_second"] if output.is_file() else 0.0
    order = list(TRAINING_ATTEMPTS)
    if speeds["gpu_thread"] > speeds["default"]:
        order = ["gpu_thread", "default", "default_fp32"]
    log(f"training loader patches/s: {speeds}; attempts in this order: {order}")
    return {"patches_per_second": speeds, "attempt_order": order}


def train(
    job: Job, args: argparse.Namespace, work: Path, out: Path, drive: Path, datalist: Path, order: list[str]
) -> Path | None:
    """Train with the user's command under the time budget, trying the ``TRAINING_ATTEMPTS`` in ``order`` while one
    fails and the budget lasts; returns the bundle folder whose ``models/model.pt`` to ship (the last one that has
    one)."""
    budget_ends = time.monotonic() + 60 * args.train_minutes
    trained = None
    for number, attempt in enumerate(order):
        minutes = (budget_ends - time.monotonic()) / 60
        if number and minutes < MIN_TRAIN_MINUTES:
            log(f"train_{attempt}: not started, {minutes:.1f} min of the training budget left")
            break
        root = work / f"train_{attempt}"
        command = training_command(root, drive, datalist, minutes, args.smoke) + TRAINING_ATTEMPTS[attempt]
        succeeded = job.run(
            f"train_{attempt}", command, out / "train.log", timeout=60 * minutes + 150, min_seconds=60,
            stall_seconds=STALL_SECONDS,
        )  # fmt: skip
        if (root / "models" / "model.pt").is_file():
            trained = root
        if succeeded:
            break
    return trained


def training_command(root: Path, drive: Path, datalist: Path, minutes: float, smoke: bool) -> list[str]:
    """The user's training command (README), in bundle folder ``root`` with a time budget of ``minutes``."""
    return [
        sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "bundles/iternet/configs/train.json",
        "--ckpt_dir", str(root / "models"), "--output_dir", str(root / "eval"), "--dataset_dir", str(drive),
        "--datalist", str(datalist),
        "--time_budget_minutes", f"{minutes:.3f}",
    ] + (SMOKE_TRAINING if smoke else [])  # fmt: skip


class Record:
    """``results.json`` and ``metrics.json`` as they stand, rewritten after every step (:meth:`save`)."""

    def __init__(self, out: Path, results: dict, started: float) -> None:
        self.out, self.results, self.metrics, self.started = out, results, {}, started

    def save(self, **entries) -> None:
        """Add ``entries`` to the results and write both files atomically."""
        from iternet_monai.utils.files import atomic_write_json

        self.results.update(entries, total_seconds=round(time.monotonic() - self.started, 1))
        atomic_write_json(self.out / "metrics.json", self.metrics)
        atomic_write_json(self.out / "results.json", self.results)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny network, 2+2 images, under 3 minutes")
    parser.add_argument("--train-minutes", type=float, default=5.0, help="training time budget (default 5)")
    parser.add_argument("--deadline-minutes", type=float, default=9.0, help="the whole job's limit (default 9)")
    parser.add_argument("--sw-batch-size", type=int, default=512, help="windows per forward pass (GPU)")
    return parser.parse_args()


def describe(args: argparse.Namespace, job: Job, work: Path, drive: Path, datalist: Path) -> dict:
    """The head of ``results.json``: the machine, the versions and the user's training command."""
    import torch

    gpu = torch.cuda.is_available() and not args.smoke
    return {
        "smoke": args.smoke,
        "device": torch.cuda.get_device_name() if gpu else f"CPU ({platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commands": {
            "train": " ".join(training_command(work / "train_default", drive, datalist, args.train_minutes, False)),
            "time_budget_minutes": args.train_minutes,
            "training_attempts": TRAINING_ATTEMPTS,
        },
        "steps": job.steps,
        "failures": job.failures,
    }


def train_and_ship(job: Job, args: argparse.Namespace, record: Record, work: Path, drive: Path, datalist: Path) -> Path:
    """Order the loaders, train, record the schedule and ship the weights; returns the shipped weights' path
    (absent when training or shipping failed: the steps that need them then fail and say so)."""
    from iternet_monai.engines.training import latest_stats

    loaders = loader_order(job, args, work, drive, datalist)
    record.save(training_loader=loaders)
    trained = train(job, args, work, record.out, drive, datalist, loaders["attempt_order"])
    record.results["trained_by"] = None if trained is None else trained.name
    if trained is not None:
        record.save(schedule=job.call("train_stats", read_json, latest_stats(trained / "eval")))
    shipped = job.call("ship_weights", ship_weights, trained / "models" / "model.pt", record.out) if trained else None
    record.save(weights=shipped)
    return record.out / "model_fp16.pt"


def infer_and_start_evaluations(
    job: Job, args: argparse.Namespace, record: Record, work: Path, drive: Path, datalist: Path, weights: Path
) -> list[tuple[str, object, subprocess.Popen]]:
    """Segment the test images whole and by sliding window (the user's inference command), and start every
    evaluation of their maps in the background, on the CPU cores while the GPU is timed; returns (name, log file,
    process) of each."""
    from iternet_monai.inferers.inferer import PAPER_OVERLAP

    stride3 = "0.75" if args.smoke else str(PAPER_OVERLAP)  # smoke: stride 32 on the CPU, the same steps
    evaluations = []
    for mode, overlap in (("whole_image", "0.0"), ("sliding_window", stride3)):
        maps = work / f"maps_{mode}"
        job.run(
            f"inference_{mode}",
            [
                sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/iternet/configs/inference.json",
                "--dataset_dir", str(drive), "--datalist", str(datalist), "--ckpt_path", str(weights), "--mode", mode,
                "--sw_overlap", overlap, "--sw_batch_size", str(args.sw_batch_size), "--nifti", "true",
                "--output_dir", str(maps),
            ] + (["--device", "cpu"] if args.smoke else []),
            timeout=240,
        )  # fmt: skip
        record.save()
        variants = [variant for variant in VARIANTS if mode == "sliding_window" or "paper" not in variant]
        for variant in variants:
            name = f"{'stride3' if mode == 'sliding_window' else 'whole'}_{variant}"
            command = evaluate_command(datalist, drive, maps, work / f"eval_{name}", variant, "drive")
            output = open(work / f"eval_{name}.log", "w")  # a file, not a pipe nobody reads while speed runs
            evaluations.append((name, output, subprocess.Popen(command, cwd=REPO, stdout=output, stderr=output)))
    return evaluations


def collect_evaluations(job: Job, record: Record, work: Path, evaluations: list) -> dict[str, dict]:
    """Wait for the evaluations (at most until the deadline), record each one's metrics or its failure, and save
    our table beside the paper's; returns our scores per evaluation."""
    for name, output, process in evaluations:
        try:
            process.wait(timeout=max(1.0, job.seconds_left()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output.close()
        job.steps[f"evaluate_{name}"] = {"returncode": process.returncode}
        if process.returncode != 0:
            tail = Path(output.name).read_text().splitlines()[-25:]
            job.failures.append({"step": f"evaluate_{name}", "returncode": process.returncode, "output_tail": tail})
            continue
        record.metrics[name] = read_json(work / f"eval_{name}" / "metrics.json")
    ours = {name: {k: content["pooled"].get(k) for k in SCORES} for name, content in record.metrics.items()}
    record.save(dataset="drive", table={"paper": PAPER["drive"], **ours})
    return ours


def time_stitching(job: Job, args: argparse.Namespace, record: Record, work: Path, speed: list[str]) -> None:
    """The sliding window's cost besides the network, each stitching, and stride 3 timed with MONAI's own loop,
    plain and buffered, to compare with the batched stitching."""
    stitching_file = work / "stitching.json"
    overhead = [sys.executable, "benchmarks/stitching.py", "--output", str(stitching_file)]
    job.run("stitching", overhead + (["--size", "200", "200", "--repeats", "1"] if args.smoke else []), timeout=90)
    record.save(stitching=read_json(stitching_file) if stitching_file.is_file() else None)
    for name, extra in (("monai", []), ("monai_buffer_steps_4", ["--buffer-steps", "4"])):
        variant = work / f"speed_{name}.json"
        options = ["--modes", "stride3", "--no-training", "--stitching", "monai", *extra, "--output", str(variant)]
        job.run(f"speed_{name}", speed[: speed.index("--output")] + options, timeout=120, min_seconds=45)
        record.save(**{f"speed_stride3_{name}": read_json(variant) if variant.is_file() else None})


def main() -> int:
    args = parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_run-"))
    job = Job(deadline=60 * args.deadline_minutes)
    started = time.monotonic()
    drive = drive_folder()
    datalist = smoke_datalist(work) if args.smoke else Path("iternet_monai/data/datalists/drive.json")
    record = Record(out, describe(args, job, work, drive, datalist), started)
    record.save()
    weights = train_and_ship(job, args, record, work, drive, datalist)
    evaluations = infer_and_start_evaluations(job, args, record, work, drive, datalist, weights)
    speed = [
        sys.executable, "benchmarks/speed.py", "--dataset-dir", str(drive), "--datalist", str(datalist),
        "--ckpt", str(weights), "--images", "2" if args.smoke else "3", "--sw-batch-size", str(args.sw_batch_size),
        "--output", str(out / "speed.json"),
    ] + (["--max-windows", "8", "--features", "4"] if args.smoke else [])  # fmt: skip
    job.run("speed", speed, timeout=240)
    record.save(speed=read_json(out / "speed.json") if (out / "speed.json").is_file() else None)
    ours = collect_evaluations(job, record, work, evaluations)  # they ran on the CPU cores while the GPU was timed
    time_stitching(job, args, record, work, speed)
    log(f"done in {record.results['total_seconds']} s with {len(job.failures)} failure(s); files in {out}:")
    for name, values in ours.items():
        log(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, float)))
    return 1 if job.failures else 0


def read_json(path: Path | None) -> dict:
    if path is None:
        raise FileNotFoundError("the training wrote no train_stats.json")
    return json.loads(Path(path).read_text())


if __name__ == "__main__":
    sys.exit(main())
