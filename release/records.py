"""What a finished training run leaves to be shipped, whoever ran it (``gpu_run.py`` on a GPU, ``score_run.py`` for a
training run of the bundle anywhere): the float16 weights, and the evaluation commands behind each row of the
paper's tables. ``ship_run.py`` reads the run's ``results.json`` made of these."""

from __future__ import annotations

import json
import sys
from pathlib import Path

# The paper's tables (Li et al. 2020): Table 1 DRIVE (threshold metrics as reported, AUC as the stored notebook),
# Table 2 CHASE_DB1 (the notebook, equal to the paper to 4 digits). iternet_spec.md §4.2.
PAPER = {
    "drive": {
        "connectivity": 0.9193,
        "f1": 0.8205,
        "sensitivity": 0.7735,
        "specificity": 0.9838,
        "accuracy": 0.9573,
        "auc": 0.9816,
    },
    "chase_db1": {"f1": 0.8073, "sensitivity": 0.7970, "specificity": 0.9823, "accuracy": 0.9655, "auc": 0.9851},
}
DATASET_NAMES = {"drive": "DRIVE", "chase_db1": "CHASE_DB1"}
# The bundle's weights file of each dataset's model (the DRIVE one is the bundle's default).
MODEL_FILES = {"drive": "model.pt", "chase_db1": "model_chase_db1.pt"}
# The released code resized each dataset's ground truth to this square and back (evaluate --gt-roundtrip).
GT_ROUNDTRIP = {"drive": 576, "chase_db1": 960}
# The shipped weights' check (tests/test_shipped_weights.py): their pooled AUC on the first test images.
CHECK_IMAGES = 2
# Scores kept of each evaluation's pooled metrics.
SCORES = ("auc", "f1", "sensitivity", "specificity", "accuracy", "connectivity", "cal", "cldice")
# How each row of a table is evaluated from a folder of probability maps: evaluate's options.
VARIANTS = {
    "fov": [],
    "whole_image_region": ["--no-fov"],
    "fov_paper_ground_truth": ["--gt-roundtrip"],  # + the dataset's size
}


def evaluate_command(datalist: str | Path, dataset_dir: Path, maps: Path, output: Path, variant: str, dataset: str):
    """``iternet-monai evaluate`` of the maps in ``maps`` against the test list, one of the ``VARIANTS``."""
    extra = list(VARIANTS[variant])
    if extra == ["--gt-roundtrip"]:
        extra.append(str(GT_ROUNDTRIP[dataset]))
    return [
        sys.executable, "-m", "iternet_monai.cli", "evaluate", "--datalist", str(datalist), "--dataset-dir",
        str(dataset_dir), "--predictions", str(maps), "--output", str(output), *extra,
    ]  # fmt: skip


def variant_options(variant: str, dataset: str) -> dict:
    """``run_evaluation``'s options of one of the ``VARIANTS`` (its evaluate flags as the config's keys)."""
    flags = VARIANTS[variant]
    return {
        **({"use_fov": False} if "--no-fov" in flags else {}),
        **({"gt_roundtrip": GT_ROUNDTRIP[dataset]} if "--gt-roundtrip" in flags else {}),
    }


def ship_weights(model: Path, out: Path) -> dict:
    """The best validation model as a float16 state dict ``out/model_fp16.pt``, checked to load into the float32
    network."""
    import torch

    from iternet_monai.engines.checkpoints import iternet_for_weights, read_weights, save_atomic
    from iternet_monai.networks import describe_weights
    from iternet_monai.utils.files import file_sha256

    state = read_weights(model)
    target = out / "model_fp16.pt"
    save_atomic({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, target)
    network = iternet_for_weights(target)
    if not all(p.dtype == torch.float32 for p in network.parameters()):
        raise RuntimeError(f"{target}: did not load into a float32 network")
    return {
        "file": target.name,
        "bytes": target.stat().st_size,
        "sha256": file_sha256(target),
        "network": describe_weights(state),
        "parameters": sum(p.numel() for p in network.parameters()),
    }


def weights_check(weights: Path, dataset: str, dataset_dir: Path, work: Path) -> dict:
    """The pooled AUC of ``weights`` on the dataset's first ``CHECK_IMAGES`` test images (one whole-image pass, FoV,
    on the CPU): the value the shipped weights are checked against."""
    from iternet_monai.data import builtin_datalist
    from iternet_monai.engines import run_evaluation

    items = json.loads(Path(builtin_datalist(dataset)).read_text())["testing"][:CHECK_IMAGES]
    datalist = work / "check_datalist.json"
    datalist.write_text(json.dumps({"testing": items}))
    options = {"ckpt_path": str(weights), "mode": "whole_image", "device": "cpu"}
    auc = run_evaluation(datalist, dataset_dir, work / "check", **options)["pooled"]["auc"]
    return {"images": [item["image"] for item in items], "auc": auc}
