"""The whole GPU job in one command: train the paper's DRIVE schedule with the user's command, evaluate the 20 test
images (whole image and stride 3; inside the FoV and the whole image; and with the released code's resized ground
truth, as the paper's tables), time inference and training, and write at most five files to OUT_DIR.

    benchmarks/gpu_run.sh [--smoke] OUT_DIR        (installs carried wheels, then runs this)

Every step runs even when an earlier one failed; the failures are in ``results.json``. Training has a time budget
(``--train-minutes``): when the speed measured over the first steps says the paper's 200 epochs will not fit, the
bundle trains the most epochs that fit, same everything else, and ``results.json`` records the schedule it ran.
``--smoke`` runs the same steps on the CPU with a tiny network, 2 training and 2 test images, 128-pixel windows at
stride 32 instead of 3, in under 3 minutes (a test runs it, so this script cannot rot).

OUT_DIR gets: ``model_fp16.pt`` (the weights to ship: float16 state dict of the best validation model),
``results.json`` (schedule, times, speeds, the paper's Table 1 beside ours, sha256, failures), ``metrics.json`` (each
evaluation's full metrics.json), ``train.log`` and ``speed.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The paper's Table 1, DRIVE (Li et al. 2020; the threshold metrics as reported, AUC as the stored notebook).
PAPER_DRIVE = {
    "connectivity": 0.9193,
    "f1": 0.8205,
    "sensitivity": 0.7735,
    "specificity": 0.9838,
    "accuracy": 0.9573,
    "auc": 0.9816,
}
SMOKE_TRAINING = [
    "--network_def#features", "4", "--patch_size", "[64,64]", "--batch_size", "4", "--num_patches", "2",
    "--steps_per_epoch", "2", "--epochs", "2", "--val_interval", "1", "--sw_overlap", "0.0", "--device", "cpu",
]  # fmt: skip


def log(message: str) -> None:
    print(f"[gpu_run {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Job:
    """The steps of the run, each timed and recorded; a failed step is recorded and the next one still runs."""

    def __init__(self) -> None:
        self.steps: dict[str, dict] = {}
        self.failures: list[dict] = []

    def run(self, name: str, command: list[str], log_file: Path | None = None, timeout: float | None = None) -> bool:
        log(f"{name}: {' '.join(command)}")
        start = time.monotonic()
        with open(log_file or os.devnull, "a") as sink:
            try:
                process = subprocess.Popen(
                    command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
                )
                tail: list[str] = []
                for line in process.stdout:
                    sink.write(line)
                    tail = (tail + [line.rstrip()])[-25:]
                    if any(
                        word in line for word in ("speed on", "time budget", "epoch ", "Metrics", "wrote", "iternet:")
                    ):
                        print(f"  {line.rstrip()[:220]}", flush=True)
                code = process.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired) as error:
                process.kill()
                code, tail = -1, [f"{type(error).__name__}: {error}"]
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
    smoke = {
        "training": content["training"][:2],
        "validation": content["training"][:2],
        "testing": content["testing"][:2],
    }
    path = folder / "drive_smoke.json"
    path.write_text(json.dumps(smoke))
    return path


def ship_weights(model: Path, out: Path) -> dict:
    """The best validation model as a float16 state dict, checked to load into the float32 network."""
    import torch

    from iternet_monai.checkpoints import describe_weights, iternet_for_weights, read_weights, save_atomic

    state = read_weights(model)
    target = out / "model_fp16.pt"
    save_atomic({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, target)
    network = iternet_for_weights(target)
    assert all(p.dtype == torch.float32 for p in network.parameters())
    return {
        "file": target.name,
        "bytes": target.stat().st_size,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "network": describe_weights(state),
        "parameters": sum(p.numel() for p in network.parameters()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny network, 2+2 images, under 3 minutes")
    parser.add_argument("--train-minutes", type=float, default=5.0, help="training time budget (default 5)")
    parser.add_argument("--sw-batch-size", type=int, default=512, help="windows per forward pass (GPU)")
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_run-"))
    started = time.monotonic()
    python = sys.executable
    job = Job()
    import torch

    drive = drive_folder()
    datalist = smoke_datalist(work) if args.smoke else Path("iternet_monai/data/datalists/drive.json")
    bundle = [python, "-m", "monai.bundle", "run"]
    training = [
        *bundle, "training", "--config_file", "bundles/iternet/configs/train.json",
        "--bundle_root", str(work / "train"), "--dataset_dir", str(drive), "--datalist", str(datalist),
        "--time_budget_minutes", str(args.train_minutes),
    ]  # fmt: skip
    job.run(
        "train", training + (SMOKE_TRAINING if args.smoke else []), out / "train.log", 60 * args.train_minutes + 300
    )
    model = work / "train" / "models" / "model.pt"
    shipped = job.call("ship_weights", ship_weights, model, out)
    weights = out / "model_fp16.pt"

    stride3 = "0.75" if args.smoke else "0.9765625"  # smoke: stride 32 on the CPU, the same steps
    metrics: dict[str, dict] = {}
    evaluations = []
    for mode, overlap in (("whole_image", "0.0"), ("sliding_window", stride3)):
        maps = work / f"maps_{mode}"
        job.run(
            f"inference_{mode}",
            [
                *bundle, "--config_file", "bundles/iternet/configs/inference.json", "--dataset_dir", str(drive),
                "--datalist", str(datalist), "--ckpt_path", str(weights), "--mode", mode, "--sw_overlap", overlap,
                "--sw_batch_size", str(args.sw_batch_size), "--nifti", "true", "--output_dir", str(maps),
            ] + (["--device", "cpu"] if args.smoke else []),
        )  # fmt: skip
        variants = {"fov": [], "whole_image_region": ["--no-fov"]}
        if mode == "sliding_window":
            variants["fov_paper_ground_truth"] = ["--gt-roundtrip", "576"]
        for variant, extra in variants.items():
            name = f"{'stride3' if mode == 'sliding_window' else 'whole'}_{variant}"
            command = [
                python, "-m", "iternet_monai.cli", "evaluate", "--datalist", str(datalist), "--dataset-dir",
                str(drive), "--predictions", str(maps), "--output", str(work / f"eval_{name}"), *extra,
            ]  # fmt: skip
            output = open(work / f"eval_{name}.log", "w")  # a file, not a pipe nobody reads while speed runs
            evaluations.append((name, output, subprocess.Popen(command, cwd=REPO, stdout=output, stderr=output)))
    speed = [
        python, "benchmarks/speed.py", "--dataset-dir", str(drive), "--datalist", str(datalist),
        "--ckpt", str(weights), "--images", "2" if args.smoke else "3", "--sw-batch-size", str(args.sw_batch_size),
        "--output", str(out / "speed.json"),
    ] + (["--max-windows", "8", "--features", "4"] if args.smoke else [])  # fmt: skip
    job.run("speed", speed, timeout=600)
    buffered = work / "speed_buffered.json"  # MONAI's buffered stitching at stride 3, to compare
    variant = ["--modes", "stride3", "--no-training", "--buffer-steps", "4", "--output", str(buffered)]
    job.run("speed_buffered", speed[: speed.index("--output")] + variant, timeout=300)
    for name, output, process in evaluations:  # the evaluations ran on the CPU cores while the GPU was timed
        process.wait()
        output.close()
        job.steps[f"evaluate_{name}"] = {"returncode": process.returncode}
        if process.returncode != 0:
            tail = Path(output.name).read_text().splitlines()[-25:]
            job.failures.append({"step": f"evaluate_{name}", "output_tail": tail})
            continue
        metrics[name] = json.loads((work / f"eval_{name}" / "metrics.json").read_text())

    train_stats = job.call(
        "train_stats", lambda: json.loads((work / "train" / "eval" / "train_stats.json").read_text())
    )
    ours = {name: {k: content["pooled"].get(k) for k in PAPER_DRIVE} for name, content in metrics.items()}
    results = {
        "smoke": args.smoke,
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available() and not args.smoke
        else platform.processor(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commands": {"train": " ".join(training), "time_budget_minutes": args.train_minutes},
        "schedule": train_stats,
        "weights": shipped,
        "table1_drive": {"paper": PAPER_DRIVE, **ours},
        "speed": json.loads((out / "speed.json").read_text()) if (out / "speed.json").is_file() else None,
        "speed_buffer_steps_4": json.loads(buffered.read_text()) if buffered.is_file() else None,
        "steps": job.steps,
        "failures": job.failures,
        "total_seconds": round(time.monotonic() - started, 1),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"done in {results['total_seconds']} s with {len(job.failures)} failure(s); files in {out}:")
    for name, values in ours.items():
        log(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, float)))
    return 1 if job.failures else 0


if __name__ == "__main__":
    sys.exit(main())
