"""Score a finished training run of the bundle (on any device) and leave what ``ship_run.py`` ships, from the run's
own files: its best validation model (``model.pt``) as float16 weights, its last resumable checkpoint (schedule,
patches seen, training time over all its sessions), its learning curve, and the paper's table beside ours on the
dataset's test images (one whole-image pass; FoV and whole image with the official ground truth; and the released
code's resized ground truth, the paper's protocol).

    python release/score_run.py --models-dir RUN/models --run NAME --dataset drive --dataset-dir DRIVE \\
        --training-command "python -m monai.bundle run training ..." [--curve curve.json] [--events RUN_EVENTS] OUT_DIR

OUT_DIR gets ``model_fp16.pt``, ``results.json`` and ``metrics.json`` (each evaluation's full metrics.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from records import MODEL_FILES, PAPER, SCORES, VARIANTS, ship_weights, variant_options, weights_check  # noqa: E402

from iternet_monai.engines import run_evaluation  # noqa: E402
from iternet_monai.utils.files import atomic_write_json  # noqa: E402


def last_checkpoint(run_dir: Path) -> Path:
    """The run's newest resumable checkpoint (the one written at its end)."""
    found = sorted(run_dir.glob("checkpoint_iteration=*.pt"), key=lambda p: int(p.stem.split("=")[1]))
    if not found:
        raise SystemExit(f"score_run: {run_dir} holds no checkpoint_iteration=N.pt: is it a run's checkpoint folder?")
    return found[-1]


def schedule(models_dir: Path, run: str) -> dict:
    """What the run trained: epochs, steps, patches and time over all its sessions, and its best validation."""
    from iternet_monai.engines.checkpoints import read_checkpoint

    checkpoint = last_checkpoint(models_dir / run)
    content = read_checkpoint(checkpoint)
    trainer, state = content["trainer"], content.get("run", {})
    best = content.get("best_model") or {}
    return {
        "checkpoint": checkpoint.name,
        "epoch": trainer["iteration"] // trainer["epoch_length"],
        "iteration": trainer.get("iteration"),
        "epoch_length": trainer.get("epoch_length"),
        "planned_epochs": trainer.get("max_epochs"),
        "patches": state.get("patches"),
        "seconds": state.get("seconds"),
        "best_metric": best.get("best_metric"),
        "best_metric_epoch": best.get("best_metric_epoch"),
    }


def validation_curve(events: Path, schedule: dict) -> list[dict]:
    """The run's validation AUC and F1 at each validation (``val_auc``, ``val_f1`` in its TensorBoard events, one
    file per session; a value logged again for an epoch keeps the last), with the patches seen by then."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    per_epoch = (schedule.get("patches") or 0) / max(1, schedule.get("epoch") or 1)
    points: dict[int, dict] = {}
    for path in sorted(events.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags = accumulator.Tags().get("scalars", [])
        for tag, key in (("val_auc", "auc"), ("val_f1", "f1")):
            for event in accumulator.Scalars(tag) if tag in tags else []:
                point = points.setdefault(event.step, {"epoch": event.step, "patches": round(event.step * per_epoch)})
                point[key] = event.value
    return [points[epoch] for epoch in sorted(points)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--models-dir", type=Path, required=True, help="the training's ckpt_dir (holds model.pt)")
    parser.add_argument("--run", required=True, help="the run's name (its checkpoint folder in --models-dir)")
    parser.add_argument("--dataset", choices=sorted(PAPER), required=True)
    parser.add_argument("--dataset-dir", type=Path, required=True)
    parser.add_argument("--datalist", help="datalist whose testing list is scored (default: the dataset's built-in)")
    parser.add_argument("--training-command", required=True, help="the command that trained it, as run")
    parser.add_argument("--curve", type=Path, help="the run's learning curve (release/learning_curve.py)")
    parser.add_argument("--events", type=Path, help="the run's TensorBoard folder (OUTPUT_DIR/RUN): its validations")
    parser.add_argument("--device-name", default=None, help="the training device, as it should be named (no torch)")
    args = parser.parse_args()
    import torch

    out = args.out_dir
    datalist = args.datalist or args.dataset
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = {
        "smoke": False,
        "dataset": args.dataset,
        "device": args.device_name or f"CPU ({platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commands": {"train": args.training_command},
        "schedule": schedule(args.models_dir, args.run),
        "weights": ship_weights(args.models_dir / "model.pt", out),
        "curve": json.loads(args.curve.read_text())["points"] if args.curve else None,
        "failures": [],
    }
    if args.events:
        results["validation_curve"] = validation_curve(args.events, results["schedule"])
    metrics = {}
    with tempfile.TemporaryDirectory() as temporary:
        maps = Path(temporary) / "maps"
        inference = [
            sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/iternet/configs/inference.json",
            "--dataset_dir", str(args.dataset_dir), "--datalist", datalist, "--ckpt_path",
            str(out / "model_fp16.pt"), "--mode", "whole_image", "--nifti", "true", "--output_dir", str(maps),
        ]  # fmt: skip
        results["commands"]["inference"] = (
            f"python -m monai.bundle run --config_file bundles/iternet/configs/inference.json --dataset_dir "
            f"{args.dataset.upper()} --datalist {datalist if args.datalist is None else 'DATALIST'} --ckpt_path "
            f"bundles/iternet/models/{MODEL_FILES[args.dataset]} --mode whole_image --nifti true --output_dir MAPS"
        )
        subprocess.run(inference, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        for variant in VARIANTS:
            output = Path(temporary) / f"eval_{variant}"
            options = variant_options(variant, args.dataset)
            metrics[f"whole_{variant}"] = run_evaluation(datalist, args.dataset_dir, output, maps, **options)
        check = weights_check(out / "model_fp16.pt", args.dataset, args.dataset_dir, Path(temporary))
        results["weights"]["check"] = check
    ours = {name: {k: content["pooled"].get(k) for k in SCORES} for name, content in metrics.items()}
    results["table"] = {"paper": PAPER[args.dataset], **ours}
    results["total_seconds"] = round(time.monotonic() - started, 1)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "results.json", results)
    print(f"score_run: {out / 'results.json'}")
    for name, values in ours.items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, float)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
