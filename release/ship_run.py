"""Ship one finished, scored training run from its folder alone: ``results.json`` and ``model_fp16.pt``, written by
``gpu_run.py`` (the GPU job) or ``score_run.py`` (any training run of the bundle, CPU or GPU):

- the weights as the bundle's model of the run's dataset (``models/model.pt`` for DRIVE, the default;
  ``models/model_chase_db1.pt`` for CHASE_DB1), with their sha256, network, patches, training time and device in
  the bundle's ``metadata.json`` (a new minor version with a changelog entry; earlier entries stay);
- the dataset's section of ``docs/results.md`` (between its ``<dataset>:start/end`` markers): the paper's table
  beside ours, the targets met or missed, the learning curve, the commands;
- the GPU rows of ``docs/benchmarks.md`` when the run was timed on a GPU, and what the README and the bundle's
  README say of the shipped weights (between their ``weights`` markers, every shipped model).

    python release/ship_run.py RUN_DIR [--replace]

Every number written is read from ``RUN_DIR/results.json``: what was measured, whatever it is. Refuses, in one line
and before writing anything, a ``--smoke`` run, weights whose sha256 is not the one ``results.json`` records, and
replacing shipped weights without ``--replace`` (replaced weights are kept in ``models/replaced/``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from records import DATASET_NAMES, MODEL_FILES  # noqa: E402

from iternet_monai.utils.files import atomic_path, atomic_write_text, file_sha256  # noqa: E402

PAPER_TABLES = {"drive": "Table 1", "chase_db1": "Table 2"}
# The rows of a table: results.json's table key and what it is.
ROWS = {
    "paper": "paper (Li et al. 2020, {table}; stride 3)",
    "stride3_fov_paper_ground_truth": "ours, stride 3, FoV, released code's resized ground truth (paper's protocol)",
    "stride3_fov": "ours, stride 3, FoV, official ground truth",
    "stride3_whole_image_region": "ours, stride 3, whole image, official ground truth",
    "whole_fov_paper_ground_truth": "ours, one whole-image pass, FoV, released code's resized ground truth",
    "whole_fov": "ours, one whole-image pass, FoV, official ground truth",
    "whole_whole_image_region": "ours, one whole-image pass, whole image, official ground truth",
}
COLUMNS = {
    "auc": "AUC",
    "f1": "F1",
    "sensitivity": "Se",
    "specificity": "Sp",
    "accuracy": "Acc",
    "connectivity": "Conn",
    "cal": "CAL",
    "cldice": "clDice",
}
# Targets on the whole-image pass, FoV, official ground truth, threshold 0.5 (AUC, F1), and the most training time.
TARGETS = {"drive": (0.978, 0.810), "chase_db1": (0.980, 0.790)}
MAX_TRAINING_HOURS = 4.0
# gpu_run.py's training attempts, by the bundle folder that trained the shipped weights.
ATTEMPTS = {
    "train_default": "the bundle's defaults: images augmented in CPU worker processes",
    "train_gpu_thread": "images cached and augmented on the GPU by a thread loader",
    "train_default_fp32": "fallback: the bundle's defaults in fp32",
}


class ShipError(Exception):
    """What keeps a run from being shipped; one line."""


def load_run(out: Path) -> dict:
    """``results.json`` of a run, checked: not a smoke run, of a known dataset, with weights matching their sha256."""
    try:
        results = json.loads((out / "results.json").read_text())
    except (OSError, ValueError) as err:
        raise ShipError(f"{out / 'results.json'}: cannot read it ({err})") from None
    if results.get("smoke"):
        raise ShipError(f"{out} holds a --smoke run (a tiny network on the CPU): nothing to ship")
    if results.get("dataset") not in MODEL_FILES:
        raise ShipError(f"{out / 'results.json'}: dataset {results.get('dataset')!r} is not one of {list(MODEL_FILES)}")
    weights = results.get("weights") or {}
    path = out / str(weights.get("file", "model_fp16.pt"))
    if not path.is_file():
        raise ShipError(f"{path}: the run shipped no weights (see 'failures' in results.json)")
    if file_sha256(path) != weights.get("sha256"):
        raise ShipError(f"{path}: its sha256 is not the one results.json records; the file changed after the run")
    return results


def number(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not math.isnan(value) else "–"


def against(value: object, limit: float) -> str:
    """``value`` to 4 decimals, or to as many as it takes to tell it from ``limit`` (0.80997 against 0.81, not
    0.8100)."""
    digits = 4
    while isinstance(value, float) and value != limit and digits < 8 and round(value, digits) == limit:
        digits += 1
    return number(value, digits)


def count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else "–"


def hours(seconds: object) -> str:
    return f"{seconds / 3600:.2f} h" if isinstance(seconds, (int, float)) else "–"


def score_table(results: dict) -> list[str]:
    table = results.get("table", {})
    lines = ["| | " + " | ".join(COLUMNS.values()) + " |", "| --- |" + " --- |" * len(COLUMNS)]
    for key, label in ROWS.items():
        if key in table:
            cells = [number(table[key].get(name)) for name in COLUMNS]
            lines.append(f"| {label.format(table=PAPER_TABLES[results['dataset']])} | " + " | ".join(cells) + " |")
    return lines


def targets(results: dict) -> list[str]:
    """The targets, each met or missed by the measured value."""
    ours = results.get("table", {}).get("whole_fov") or {}
    auc, f1 = TARGETS[results["dataset"]]
    seconds = (results.get("schedule") or {}).get("seconds")
    checks = [
        (f"AUC ≥ {auc}: {against(ours.get('auc'), auc)}", ours.get("auc"), auc, True),
        (f"F1 ≥ {f1}: {against(ours.get('f1'), f1)}", ours.get("f1"), f1, True),
    ]
    if "speed" not in results:
        checks.append((f"at most {MAX_TRAINING_HOURS:g} h of training: {hours(seconds)}", seconds, 3600 * 4, False))
    lines = []
    for text, value, limit, at_least in checks:
        met = value is not None and (value >= limit if at_least else value <= limit)
        lines.append(f"- {'met' if met else 'missed' if value is not None else 'not measured'}: {text}")
    return lines


def curve_table(results: dict) -> list[str]:
    """The learning curve: patches seen -> test AUC, F1 (for the record; checkpoints are chosen on validation), or,
    where the test images were not scored as the run trained, its own validations."""
    points, scored = results.get("curve") or [], "AUC | F1"
    heading = "Learning curve (the test images, scored at each resumable checkpoint for the record only):"
    watch = "`release/learning_curve.py --watch` scores each resumable checkpoint as a run trains"
    if not points and results.get("validation_curve"):
        points, scored = results["validation_curve"], "validation AUC | validation F1"
        heading = (
            "Learning curve on the validation list, as the run validated itself (the test images were not scored "
            f"during this run; {watch}):"
        )
    if not points:
        return [f"Learning curve: none was recorded for this run ({watch})."]
    lines = [heading, "", f"| patches seen | {scored} |", "| --- | --- | --- |"]
    return lines + [f"| {p['patches']:,} | {number(p.get('auc'))} | {number(p.get('f1'))} |" for p in points]


def speed_rows(results: dict) -> list[str]:
    """The GPU rows of docs/benchmarks.md."""
    device = results.get("device", "GPU")
    speed = results.get("speed") or {}
    lines = [
        f"Device: {device}, torch {results.get('torch')}, Python {results.get('python')}; bf16 autocast, "
        f"channels-last, {speed.get('sw_batch_size', '–')} windows per forward pass; trained weights "
        "(`bash release/gpu_run.sh OUT`, `speed.py --images 3` after a warm-up image).",
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


def weights_entry(results: dict, digest: str) -> dict:
    """What metadata.json records of shipped weights."""
    schedule = results.get("schedule") or {}
    ours = results.get("table", {}).get("whole_fov") or {}
    name = DATASET_NAMES[results["dataset"]]
    return {
        "dataset": results["dataset"],
        "sha256": digest,
        "dtype": "float16 (loaded into the float32 network)",
        "network": results["weights"].get("network"),
        "parameters": results["weights"].get("parameters"),
        "trained_on": f"{name} training set, the paper's augmentation, patches, loss and optimiser",
        "training_command": (results.get("commands") or {}).get("train"),
        "epochs": schedule.get("epoch"),
        "patches_seen": schedule.get("patches"),
        "training_seconds": schedule.get("seconds"),
        "device": results.get("device"),
        "test_whole_image_fov": {"auc": ours.get("auc"), "f1": ours.get("f1")},
        "check": results["weights"].get("check"),
        "results": "docs/results.md of the repository",
    }


def weights_note(metadata: dict) -> list[str]:
    """What the READMEs say of the shipped weights: every model in metadata.json."""
    lines = []
    for file, entry in sorted((metadata.get("weights") or {}).items()):
        scores = entry.get("test_whole_image_fov") or {}
        trained = entry.get("trained_on", "").split(" training set")[0]
        lines.append(
            f"- `{file}` ({trained}; {entry.get('network')}, float16, sha256 `{entry['sha256'][:16]}…`): on "
            f"{trained}'s test images, one whole-image pass inside the FoV, AUC {number(scores.get('auc'))}, F1 "
            f"{number(scores.get('f1'))}; trained on {count(entry.get('patches_seen'))} patches in "
            f"{hours(entry.get('training_seconds'))} on {entry.get('device')}."
        )
    other = "the CHASE_DB1 model for photographs like CHASE_DB1's, or " if len(lines) > 1 else ""
    return lines + [
        "",
        f"`models/model.pt` is the default; `--ckpt_path` takes another ({other}your own `model.pt`). "
        "docs/results.md of the repository has the tables beside the paper's.",
    ]


def replace_block(path: Path, name: str, lines: list[str]) -> str:
    """``path``'s text with the lines between ``<!-- name:start -->`` and ``<!-- name:end -->`` replaced."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text()
    if text.count(start) != 1 or text.count(end) != 1:
        raise ShipError(f"{path}: needs one {start} and one {end} line around what this script writes")
    pattern = re.escape(start) + ".*?" + re.escape(end)
    return re.sub(pattern, lambda _: "\n".join([start, *lines, end]), text, flags=re.DOTALL)


def results_section(results: dict, file: str, digest: str) -> list[str]:
    """The run's section of docs/results.md."""
    dataset = results["dataset"]
    name = DATASET_NAMES[dataset]
    schedule = results.get("schedule") or {}
    commands = results.get("commands") or {}
    failures = results.get("failures") or []
    trained_by = f" ({ATTEMPTS[results['trained_by']]})" if results.get("trained_by") in ATTEMPTS else ""
    return [
        f"## {name} ({PAPER_TABLES[dataset]}): `models/{file}`",
        "",
        f"float16, sha256 `{digest}`, {results['weights'].get('network')} "
        f"({results['weights'].get('parameters'):,} parameters); trained on {results.get('device')} (torch "
        f"{results.get('torch')}): {schedule.get('epoch', '–')} epochs, {count(schedule.get('patches'))} "
        f"patches of 128×128 in {hours(schedule.get('seconds'))}{trained_by}; `model.pt` is the best validation "
        f"AUC ({number(schedule.get('best_metric'))}, epoch {schedule.get('best_metric_epoch', '–')}) on the "
        f"validation list ({name}'s training images, as the paper: no test image is seen before the test).",
        "",
        f"{name} test images, threshold 0.5:",
        "",
        *score_table(results),
        "",
        "Targets (one whole-image pass, FoV, official ground truth):",
        "",
        *targets(results),
        "",
        *curve_table(results),
        "",
        "Commands:",
        "",
        f"- Training: `{commands.get('train', '–')}`",
        f"- Inference: `{commands['inference']}`"
        if commands.get("inference")
        else "- Inference: the bundle's inference.json (`release/gpu_run.py`)",
        f"- Scores: `iternet-monai evaluate --datalist {dataset} --dataset-dir {name} --predictions MAPS` inside the "
        "FoV; `--no-fov` on the whole image; `--gt-roundtrip SIZE` with the released code's resized ground truth "
        "(docs/evaluation.md). `python release/score_run.py` ran these and `python release/ship_run.py` wrote "
        "this section from its `results.json`.",
        "",
        "Failed or skipped steps: "
        + (
            "; ".join(f"{f.get('step')}: {f.get('skipped') or f.get('error') or f.get('returncode')}" for f in failures)
            or "none"
        )
        + ".",
    ]


def ship(out: Path, bundle: Path, docs: Path, readme: Path, replace: bool = False) -> tuple[Path, str]:
    """Check everything, then write the weights, metadata.json, the run's section of results.md and the marked blocks
    of the READMEs (and benchmarks.md for a GPU run). Returns the shipped file and its sha256."""
    results = load_run(out)
    weights = out / results["weights"]["file"]
    digest = results["weights"]["sha256"]
    file = MODEL_FILES[results["dataset"]]
    target = bundle / "models" / file
    if target.is_file() and file_sha256(target) != digest and not replace:
        raise ShipError(f"{target} exists with other weights; pass --replace to ship these instead")
    metadata_file = bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    again = ((metadata.get("weights") or {}).get(f"models/{file}") or {}).get("sha256") == digest
    major, minor, _ = (int(part) for part in metadata["version"].split("."))
    version = metadata["version"] if again else f"{major}.{minor + 1}.0"  # the same weights again: no new version
    shipped = {**(metadata.get("weights") or {}), f"models/{file}": weights_entry(results, digest)}
    metadata.update(version=version, weights=shipped)
    schedule = results.get("schedule") or {}
    metadata["changelog"] = {
        version: f"models/{file}: {DATASET_NAMES[results['dataset']]} weights ({count(schedule.get('patches'))} "
        f"patches on {results.get('device')}), sha256 {digest}",
        **metadata["changelog"],
    }
    section = results_section(results, file, digest)
    blocks = {
        docs / "results.md": replace_block(docs / "results.md", results["dataset"], section),
        readme: replace_block(readme, "weights", weights_note(metadata)),
        bundle / "docs" / "README.md": replace_block(bundle / "docs" / "README.md", "weights", weights_note(metadata)),
    }
    if results.get("speed"):
        blocks[docs / "benchmarks.md"] = replace_block(docs / "benchmarks.md", "gpu-rows", speed_rows(results))

    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file() and file_sha256(target) != digest:
        kept = bundle / "models" / "replaced" / f"{target.stem}.{file_sha256(target)[:12]}.pt"
        kept.parent.mkdir(exist_ok=True)
        shutil.copyfile(target, kept)
    with atomic_path(target) as temporary:
        shutil.copyfile(weights, temporary)
    atomic_write_text(metadata_file, json.dumps(metadata, indent=4, ensure_ascii=False) + "\n")
    for path, text in blocks.items():
        atomic_write_text(path, text)
    return target, digest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run's folder: results.json and model_fp16.pt")
    parser.add_argument("--bundle", type=Path, default=REPO / "iternet_monai" / "bundle")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--replace", action="store_true", help="replace shipped weights")
    args = parser.parse_args()
    try:
        target, digest = ship(args.run_dir, args.bundle, args.docs, args.readme, args.replace)
    except ShipError as err:
        print(f"ship_run: {err}", file=sys.stderr)
        return 2
    print(
        f"shipped {target} (sha256 {digest}); wrote its section of {args.docs / 'results.md'}, metadata.json and the "
        "marked blocks of both READMEs: review them, then commit"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
