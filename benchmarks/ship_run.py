"""Ship what one GPU run (``benchmarks/gpu_run.sh``) measured, from its output folder alone:

- its float16 weights as the bundle's ``models/model.pt``, with their sha256, schedule and device in the bundle's
  ``metadata.json`` (a new minor version with a changelog entry);
- ``docs/results.md``: the paper's Table 1 (DRIVE) beside ours, whole image and stride 3, inside the FoV and on
  the whole image, the targets met or missed, the schedule, the commands, the speed and any failed step;
- the GPU rows of ``docs/benchmarks.md`` (between its ``gpu-rows`` markers) and what the README and the bundle's
  README say of the weights (between their ``weights`` markers).

    python benchmarks/ship_gpu_run.py OUT_DIR [--replace]

Every number written is read from ``OUT_DIR/results.json``: what was measured, whatever it is. Refuses, in one line
and before writing anything, a ``--smoke`` run, weights whose sha256 is not the one ``results.json`` records, and
replacing shipped weights without ``--replace``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from iternet_monai.files import atomic_path, atomic_write_text  # noqa: E402

# Table 1's rows: results.json's table1_drive key and what it is.
ROWS = {
    "paper": "paper (Li et al. 2020, Table 1)",
    "stride3_fov_paper_ground_truth": "ours, stride 3, FoV, released code's resized ground truth (paper's protocol)",
    "stride3_fov": "ours, stride 3, FoV, official ground truth",
    "stride3_whole_image_region": "ours, stride 3, whole image, official ground truth",
    "whole_fov": "ours, one whole-image pass, FoV, official ground truth",
    "whole_whole_image_region": "ours, one whole-image pass, whole image, official ground truth",
}
# gpu_run.py's training attempts, by the bundle folder that trained the shipped weights.
ATTEMPTS = {
    "train_default": "the bundle's defaults: images augmented in CPU worker processes",
    "train_gpu_thread": "images cached and augmented on the GPU by a thread loader",
    "train_default_fp32": "fallback: the bundle's defaults in fp32",
}
COLUMNS = {
    "connectivity": "Conn",
    "f1": "F1",
    "sensitivity": "Se",
    "specificity": "Sp",
    "accuracy": "Acc",
    "auc": "AUC",
}


class ShipError(Exception):
    """What keeps a run from being shipped; one line."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_run(out: Path) -> dict:
    """``results.json`` of a GPU run, checked: not a smoke run, with weights matching their recorded sha256."""
    try:
        results = json.loads((out / "results.json").read_text())
    except (OSError, ValueError) as err:
        raise ShipError(f"{out / 'results.json'}: cannot read it ({err})") from None
    if results.get("smoke"):
        raise ShipError(f"{out} holds a --smoke run (a tiny network on the CPU): nothing to ship")
    weights = results.get("weights") or {}
    path = out / str(weights.get("file", "model_fp16.pt"))
    if not path.is_file():
        raise ShipError(f"{path}: the run shipped no weights (see 'failures' in results.json)")
    if sha256(path) != weights.get("sha256"):
        raise ShipError(f"{path}: its sha256 is not the one results.json records; the file changed after the run")
    return results


def number(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def table1(results: dict) -> list[str]:
    table = results.get("table1_drive", {})
    lines = ["| | " + " | ".join(COLUMNS.values()) + " |", "| --- |" + " --- |" * len(COLUMNS)]
    for key, label in ROWS.items():
        values = table.get(key)
        cells = [number(values.get(name)) if values else "not measured" for name in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def targets(results: dict) -> list[str]:
    """The issue's targets, each met or missed by the measured value."""
    paper = results.get("table1_drive", {}).get("stride3_fov_paper_ground_truth") or {}
    schedule = results.get("schedule") or {}
    stride3 = ((results.get("speed") or {}).get("modes") or {}).get("stride3") or {}
    checks = [
        (f"DRIVE AUC ≥ 0.9816 (paper's protocol): {number(paper.get('auc'))}", paper.get("auc"), 0.9816, True),
        (f"DRIVE F1 ≥ 0.8205: {number(paper.get('f1'))}", paper.get("f1"), 0.8205, True),
        (f"DRIVE Conn ≥ 0.9193: {number(paper.get('connectivity'))}", paper.get("connectivity"), 0.9193, True),
        (
            f"the paper's 200 epochs in ≤ 6 min: {schedule.get('epoch', '–')} of {schedule.get('planned_epochs', '–')} "
            f"epochs in {number(schedule.get('seconds'), 0)} s",
            None if "epoch" not in schedule else schedule["seconds"] if schedule["epoch"] >= 200 else math.inf,
            360,
            False,
        ),
        (
            f"stride 3 ≤ 1.5 s per DRIVE image: {number(stride3.get('seconds_per_image'), 2)} s",
            stride3.get("seconds_per_image"),
            1.5,
            False,
        ),
        (
            f"bf16 within 1e-4 AUC of fp32 at stride 3: {number(stride3.get('auc_bf16_minus_fp32_one_image'), 6)}",
            None
            if stride3.get("auc_bf16_minus_fp32_one_image") is None
            else abs(stride3["auc_bf16_minus_fp32_one_image"]),
            1e-4,
            False,
        ),
    ]
    lines = []
    for text, value, limit, at_least in checks:
        met = value is not None and (value >= limit if at_least else value <= limit)
        lines.append(f"- {'met' if met else 'missed' if value is not None else 'not measured'}: {text}")
    return lines


def speed_rows(results: dict) -> list[str]:
    """The GPU rows of docs/benchmarks.md."""
    device = results.get("device", "GPU")
    speed = results.get("speed") or {}
    lines = [
        f"Device: {device}, torch {results.get('torch')}, Python {results.get('python')}; bf16 autocast, "
        f"channels-last, {speed.get('sw_batch_size', '–')} windows per forward pass; trained weights "
        "(`bash benchmarks/gpu_run.sh OUT`, `speed.py --images 3` after a warm-up image).",
        "",
        "| what | seconds per DRIVE image | images/s | peak GPU memory (MiB) | AUC (3 images) |",
        "| --- | --- | --- | --- | --- |",
    ]
    names = {"whole": "whole image", "stride8": "stride 8 (3,213 windows)", "stride3": "stride 3 (22,491 windows)"}
    for mode, entry in (speed.get("modes") or {}).items():
        lines.append(
            f"| {names.get(mode, mode)}, batched stitching | {number(entry.get('seconds_per_image'), 3)} | "
            f"{number(entry.get('images_per_second'), 2)} | {number(entry.get('peak_memory_mb'), 0)} | "
            f"{number(entry.get('auc'))} |"
        )
    for key, label in (
        ("speed_stride3_monai", "MONAI's loop"),
        ("speed_stride3_monai_buffer_steps_4", "MONAI's loop, buffer_steps 4"),
    ):
        entry = ((results.get(key) or {}).get("modes") or {}).get("stride3")
        if entry:
            lines.append(
                f"| stride 3, {label} | {number(entry.get('seconds_per_image'), 3)} | "
                f"{number(entry.get('images_per_second'), 2)} | {number(entry.get('peak_memory_mb'), 0)} | "
                f"{number(entry.get('auc'))} |"
            )
    stitching = (results.get("stitching") or {}).get("seconds_per_image") or {}
    if stitching:
        lines += [
            "",
            "Stitching alone at stride 3, a network that does nothing (`benchmarks/stitching.py`): "
            + ", ".join(f"{name} {number(seconds, 3)} s" for name, seconds in stitching.items())
            + " per image.",
        ]
    schedule = results.get("schedule") or {}
    plain = speed.get("training_plain_loop") or {}
    lines += [
        "",
        f"Training at batch 32: the bundle's trainer {number(schedule.get('patches_per_second'), 0)} patches/s "
        f"({schedule.get('epoch', '–')} epochs of {schedule.get('epoch_length', '–')} steps in "
        f"{number(schedule.get('seconds'), 0)} s with validation); a plain PyTorch loop of the same network "
        f"{number(plain.get('patches_per_second'), 0)} patches/s.",
    ]
    return lines


def weights_note(results: dict, digest: str) -> list[str]:
    """What the READMEs say of the shipped weights."""
    schedule = results.get("schedule") or {}
    paper = results.get("table1_drive", {}).get("stride3_fov_paper_ground_truth") or {}
    return [
        f"The bundle ships trained weights, `models/model.pt` (float16, sha256 `{digest}`), trained on DRIVE's 20 "
        f"training images ({schedule.get('epoch', '–')} of the paper's {schedule.get('planned_epochs', '–')} epochs "
        f"on {results.get('device')}). On DRIVE's test images, stride 3, the paper's protocol: AUC "
        f"{number(paper.get('auc'))}, F1 {number(paper.get('f1'))}, Conn {number(paper.get('connectivity'))} "
        "(docs/results.md of the repository, beside the paper's). `--ckpt_path` takes your own `model.pt`.",
    ]


def replace_block(path: Path, name: str, lines: list[str]) -> str:
    """``path``'s text with the lines between ``<!-- name:start -->`` and ``<!-- name:end -->`` replaced."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text()
    if text.count(start) != 1 or text.count(end) != 1:
        raise ShipError(f"{path}: needs one {start} and one {end} line around what this script writes")
    pattern = re.escape(start) + ".*?" + re.escape(end)
    return re.sub(pattern, lambda _: "\n".join([start, *lines, end]), text, flags=re.DOTALL)


def results_page(results: dict, weights_sha: str) -> str:
    schedule = results.get("schedule") or {}
    failures = results.get("failures") or []
    budget = (results.get("commands") or {}).get("time_budget_minutes")
    lines = [
        "# Results: DRIVE, with the shipped weights",
        "",
        f"One run of `bash benchmarks/gpu_run.sh OUT` on {results.get('device')} (torch {results.get('torch')}), "
        f"{results.get('total_seconds', '–')} s in all; every number below is read from its `results.json` by "
        "`python benchmarks/ship_gpu_run.py OUT`. The weights: `bundles/iternet/models/model.pt`, float16, "
        f"sha256 `{weights_sha}`.",
        "",
        "## Table 1, DRIVE test set (20 images)",
        "",
        *table1(results),
        "",
        "Targets (issue 9), judged on the paper's protocol row:",
        "",
        *targets(results),
        "",
        "## How each number was made",
        "",
        f"- Training: `python -m monai.bundle run training --config_file bundles/iternet/configs/train.json "
        f"--dataset_dir DRIVE --time_budget_minutes {budget}` (the built-in DRIVE datalist: the 20 training images, "
        f"validated on them as the paper; {ATTEMPTS.get(results.get('trained_by'), 'no attempt trained')}). Schedule "
        "run: "
        f"{schedule.get('epoch', '–')} of the {schedule.get('planned_epochs', '–')} planned epochs × "
        f"{schedule.get('epoch_length', '–')} steps × 32 patches, {number(schedule.get('seconds'), 0)} s "
        f"({number(schedule.get('patches_per_second'), 0)} patches/s); the best validation "
        f"{schedule.get('key_metric_name', 'AUC')} {number(schedule.get('best_metric'))} at epoch "
        f"{schedule.get('best_metric_epoch', '–')} gave `model.pt`.",
        "- Inference: `python -m monai.bundle run --config_file bundles/iternet/configs/inference.json --dataset_dir "
        "DRIVE --datalist drive --mode sliding_window --sw_overlap 0.9765625` (stride 3) or `--mode whole_image`, "
        "`--nifti true` (float32 probabilities).",
        "- Scores: `iternet-monai evaluate --datalist drive --dataset-dir DRIVE --predictions MAPS` inside the "
        "official FoV masks; `--no-fov` on the whole image; `--gt-roundtrip 576` with the released code's resized "
        "ground truth (docs/evaluation.md).",
        "",
        "## Speed",
        "",
        *speed_rows(results),
        "",
        "## Failed or skipped steps",
        "",
        *(
            [f"- {f.get('step')}: {f.get('skipped') or f.get('error') or f.get('returncode')}" for f in failures]
            or ["none"]
        ),
        "",
    ]
    return "\n".join(lines)


def ship(out: Path, bundle: Path, docs: Path, readme: Path, replace: bool = False) -> str:
    """Check everything, then write the weights, metadata.json, results.md and the marked blocks of the READMEs and
    benchmarks.md."""
    results = load_run(out)
    weights = out / results["weights"]["file"]
    digest = results["weights"]["sha256"]
    target = bundle / "models" / "model.pt"
    if target.is_file() and sha256(target) != digest and not replace:
        raise ShipError(f"{target} exists with other weights; pass --replace to ship these instead")
    note = weights_note(results, digest)
    blocks = {
        docs / "benchmarks.md": replace_block(docs / "benchmarks.md", "gpu-rows", speed_rows(results)),
        readme: replace_block(readme, "weights", note),
        bundle / "docs" / "README.md": replace_block(bundle / "docs" / "README.md", "weights", note),
    }
    metadata_file = bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())

    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as temporary:
        shutil.copyfile(weights, temporary)
    schedule = results.get("schedule") or {}
    major, minor, _ = (int(part) for part in metadata["version"].split("."))
    version = f"{major}.{minor + 1}.0"
    metadata["version"] = version
    metadata["changelog"] = {
        version: f"trained weights (DRIVE, {schedule.get('epoch')} epochs on {results.get('device')}), sha256 {digest}",
        **metadata["changelog"],
    }
    metadata["weights"] = {
        "file": "models/model.pt",
        "sha256": digest,
        "dtype": "float16 (loaded into the float32 network)",
        "network": results["weights"].get("network"),
        "parameters": results["weights"].get("parameters"),
        "trained_on": "DRIVE training set (20 images), the paper's augmentation and schedule",
        "epochs": schedule.get("epoch"),
        "device": results.get("device"),
        "results": "docs/results.md of the repository",
    }
    atomic_write_text(metadata_file, json.dumps(metadata, indent=4, ensure_ascii=False) + "\n")
    atomic_write_text(docs / "results.md", results_page(results, digest))
    for path, text in blocks.items():
        atomic_write_text(path, text)
    return digest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--bundle", type=Path, default=REPO / "iternet_monai" / "bundle")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--replace", action="store_true", help="replace shipped weights")
    args = parser.parse_args()
    try:
        digest = ship(args.out_dir, args.bundle, args.docs, args.readme, args.replace)
    except ShipError as err:
        print(f"ship_gpu_run: {err}", file=sys.stderr)
        return 2
    print(
        f"shipped {args.bundle / 'models' / 'model.pt'} (sha256 {digest}); wrote {args.docs / 'results.md'} and "
        f"the marked blocks of {args.docs / 'benchmarks.md'} and both READMEs: review them, then commit"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
