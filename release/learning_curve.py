"""A training run's learning curve on a test split: every resumable checkpoint the run writes (every 10 minutes by
default) is scored by the project's own evaluation, the way docs/results.md reports a model.

    python release/learning_curve.py MODELS_DIR/RUN --datalist drive --dataset-dir DRIVE --batch-size 8 \\
        --output curve.json [--watch]

Each point: the step, the patches seen (step x batch size), and the pooled AUC, F1, Se, Sp, Acc of the test images
(whole-image pass, FoV, official ground truth, threshold 0.5: ``iternet_monai.engines.run_evaluation``, the run of
``iternet-monai evaluate --ckpt``). With ``--watch`` it waits for new checkpoints until the run's folder holds its
final one or the training stops writing for ``--idle-minutes``; a run keeps only its newest checkpoint, so the curve
has the points that were there when looked at. The curve is for the record only: checkpoints are chosen on the
validation list, never on these images.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from records import SCORES  # noqa: E402

from iternet_monai.engines import run_evaluation  # noqa: E402
from iternet_monai.utils.files import atomic_write_json  # noqa: E402

CHECKPOINT = re.compile(r"checkpoint_iteration=(\d+)\.pt$")


def checkpoints(run_dir: Path) -> dict[int, Path]:
    """The run's resumable checkpoints by step."""
    found = {}
    for path in run_dir.glob("checkpoint_iteration=*.pt"):
        match = CHECKPOINT.search(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def score(checkpoint: Path, args: argparse.Namespace, work: Path) -> dict:
    """Pooled test scores of ``checkpoint``'s network with the project's evaluation."""
    output = work / f"eval_{checkpoint.stem}"
    options = {"ckpt_path": str(checkpoint), "data_key": args.key, "mode": "whole_image", "device": "cpu"}
    started = time.monotonic()
    pooled = run_evaluation(args.datalist, args.dataset_dir, output, **options)["pooled"]
    shutil.rmtree(output, ignore_errors=True)
    return {**{name: pooled.get(name) for name in SCORES}, "evaluation_seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the run's checkpoint folder: <ckpt_dir>/<run name>")
    parser.add_argument("--datalist", default="drive", help="built-in name or datalist JSON")
    parser.add_argument("--dataset-dir", type=Path, required=True)
    parser.add_argument("--key", default="testing", help="datalist list to score (default: testing)")
    parser.add_argument("--batch-size", type=int, required=True, help="the run's patches per step")
    parser.add_argument("--output", type=Path, required=True, help="curve JSON (points are added to it)")
    parser.add_argument("--watch", action="store_true", help="keep scoring new checkpoints as the run writes them")
    parser.add_argument("--idle-minutes", type=float, default=25.0, help="with --watch: stop after this long idle")
    args = parser.parse_args()
    curve = json.loads(args.output.read_text()) if args.output.is_file() else {"points": []}
    curve.update(datalist=args.datalist, key=args.key, batch_size=args.batch_size)
    done = {point["step"] for point in curve["points"]}
    last_new = time.monotonic()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        while True:
            pending = {step: path for step, path in checkpoints(args.run_dir).items() if step not in done}
            for step, path in sorted(pending.items()):
                copy = work / path.name  # the run removes its older checkpoint when it writes the next
                try:
                    shutil.copyfile(path, copy)
                except FileNotFoundError:
                    continue
                point = {"step": step, "patches": step * args.batch_size, **score(copy, args, work)}
                copy.unlink()
                curve["points"] = sorted([*curve["points"], point], key=lambda p: p["step"])
                atomic_write_json(args.output, curve)
                done.add(step)
                last_new = time.monotonic()
                print(json.dumps(point), flush=True)
            if not args.watch or time.monotonic() - last_new > 60 * args.idle_minutes:
                return 0
            time.sleep(30)


if __name__ == "__main__":
    sys.exit(main())
