"""The ``iternet-monai`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .data import BUILTIN_DATALISTS, DatalistError, builtin_datalist, load_datalist, make_datalist
from .evaluation import EvaluationError


def _evaluate(args: argparse.Namespace) -> int:
    import logging

    import torch

    from .evaluation import evaluate, map_predictor, model_predictor, summary_table
    from .inferers import make_inferer, resolve_mode
    from .networks import iternet_from_state_dict

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    datalist = builtin_datalist(args.datalist) if args.datalist in BUILTIN_DATALISTS else args.datalist
    items = load_datalist(datalist, args.dataset_dir, args.key, check=True)
    if (args.ckpt is None) == (args.predictions is None):
        raise EvaluationError("give exactly one of --ckpt (a model.pt to run) or --predictions (a folder of maps)")
    if args.predictions:
        predict = map_predictor(items, args.predictions)
        source = predict.description
    else:
        state = torch.load(args.ckpt, map_location="cpu", weights_only=True)
        network = iternet_from_state_dict(state.get("model", state))
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        inferer = make_inferer(args.mode, device, (128, 128), args.sw_overlap, args.sw_batch_size)
        predict = model_predictor(network, inferer, device, amp=device.type == "cuda")
        source = {"checkpoint": str(args.ckpt), "device": str(device), "mode": resolve_mode(args.mode, device)}
        if source["mode"] == "sliding_window":
            source.update(roi_size=list(inferer.roi_size), overlap=inferer.overlap, blend=inferer.mode)
    content = evaluate(
        items,
        predict,
        args.output,
        use_fov=not args.no_fov,
        threshold=args.threshold,
        gt_roundtrip=args.gt_roundtrip,
        connectivity=1 if args.connectivity == 4 else 2,
        overwrite=args.overwrite,
        source=source,
    )
    print(summary_table(content))
    print(f"wrote {args.output}/metrics.json, per_image.csv, roc.png, pr.png and overlays/")
    return 0


def _make_datalist(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise DatalistError(f"{output} exists; pass --overwrite to replace it")
    content = make_datalist(args.dataset_dir, args.images, args.labels, args.masks, args.test)
    output.write_text(json.dumps(content, indent=1) + "\n")
    counts = ", ".join(f"{len(v)} {k}" for k, v in content.items())
    print(f"wrote {output}: {counts} (paths relative to {args.dataset_dir})")
    return 0


def _label_app(args: argparse.Namespace) -> int:
    from .monailabel import server_command, setup_app

    app = setup_app(args.app_dir, args.bundle)
    print(f"installed {args.bundle} as {app}/model/iternet; start MONAI Label with:")
    print(" ".join(server_command(app, args.studies or "<studies folder>", args.port)))
    return 0


def _convert_studies(args: argparse.Namespace) -> int:
    from .monailabel import convert_studies

    written = convert_studies(args.source, args.target, args.overwrite)
    print(f"wrote {len(written)} studies to {args.target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iternet-monai", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser(
        "make-datalist",
        help="write a datalist for a folder of images (+ labels, + FoV masks)",
        description="Match every image with its label and mask by file name and write a MONAI datalist whose paths "
        "are relative to --dataset-dir. Train with: python -m monai.bundle run training --config_file "
        "bundles/iternet/train.json --dataset_dir DIR --datalist OUTPUT",
    )
    make.add_argument("--dataset-dir", required=True, help="root folder; the datalist's paths are relative to it")
    make.add_argument("--images", default="images", help="image folder, relative to --dataset-dir (default: images)")
    make.add_argument("--labels", help="vessel label folder, relative to --dataset-dir")
    make.add_argument("--masks", help="FoV mask folder (optional; masks are derived from the images without it)")
    make.add_argument("--test", nargs="*", default=[], help="image stems (file names without suffix) for 'testing'")
    make.add_argument("--output", required=True, help="datalist JSON to write")
    make.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    make.set_defaults(func=_make_datalist)

    ev = commands.add_parser(
        "evaluate",
        help="score a model or saved probability maps on a datalist",
        description="Evaluate under one protocol (iternet_monai.evaluation): a model.pt run on every image, or any "
        "method's saved maps (PNG, TIFF, NPY, NIfTI) matched to the datalist's images by file stem.",
    )
    ev.add_argument("--datalist", required=True, help=f"datalist JSON, or one of {', '.join(BUILTIN_DATALISTS)}")
    ev.add_argument("--dataset-dir", required=True, help="folder the datalist's paths are relative to")
    ev.add_argument("--key", default="testing", help="datalist list to evaluate (default: testing)")
    ev.add_argument("--ckpt", help="model.pt (state dict) of an IterNet to run")
    ev.add_argument("--predictions", help="folder of probability maps named after the images")
    ev.add_argument("--output", default="evaluation", help="output folder (default: evaluation)")
    ev.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier evaluation there")
    ev.add_argument("--no-fov", action="store_true", help="score the whole image instead of the FoV mask")
    ev.add_argument("--threshold", type=float, default=0.5, help="binarisation prob >= threshold (default 0.5)")
    ev.add_argument(
        "--gt-roundtrip",
        type=int,
        metavar="SIZE",
        help="the released code's ground truth: label resized to SIZE^2 and back (576 DRIVE, 960 CHASE_DB1, "
        "592 STARE), for parity with the paper's tables",
    )
    ev.add_argument("--connectivity", type=int, choices=(4, 8), default=8, help="pixel connectivity of components")
    ev.add_argument(
        "--mode",
        default="auto",
        choices=("auto", "whole_image", "sliding_window"),
        help="with --ckpt: auto = sliding window on CUDA, whole image on CPU",
    )
    ev.add_argument("--sw-overlap", type=float, default=0.9765625, help="sliding-window overlap (1-3/128: stride 3)")
    ev.add_argument("--sw-batch-size", type=int, default=64)
    ev.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    ev.set_defaults(func=_evaluate)

    app = commands.add_parser(
        "label-app",
        help="set up a MONAI Label app folder with this bundle",
        description="Run in the MONAI Label environment (tox -e monailabel, or its venv).",
    )
    app.add_argument("--app-dir", default="apps", help="folder for MONAI Label's monaibundle app (default: apps)")
    app.add_argument("--bundle", default="bundles/iternet", help="bundle folder (default: bundles/iternet)")
    app.add_argument("--studies", help="studies folder, shown in the printed start command")
    app.add_argument("--port", type=int, default=8000)
    app.set_defaults(func=_label_app)

    conv = commands.add_parser(
        "convert-studies",
        help="copy photographs as PNG for MONAI Label's datastore",
        description="GIF, PPM, TIFF and BMP become RGB PNG; PNG and JPEG are copied.",
    )
    conv.add_argument("source")
    conv.add_argument("target")
    conv.add_argument("--overwrite", action="store_true")
    conv.set_defaults(func=_convert_studies)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatalistError, EvaluationError, FileNotFoundError, FileExistsError) as err:
        print(f"iternet-monai: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
