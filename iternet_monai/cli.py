"""The ``iternet-monai`` command: the tasks around the IterNet bundle that MONAI's ``python -m monai.bundle``
commands do not cover. ``make-datalist`` pairs a folder of fundus photographs with their vessel labels and
field-of-view masks for training; ``evaluate`` scores a model, or any method's saved probability maps, under one
protocol (AUC, F1, connectivity, ...); ``measure`` turns vessel maps into biomarker tables with quality checks;
``cohort`` segments, checks and measures a whole cohort on Ray (or in SLURM shards), resumably; ``label-app`` and
``convert-studies`` set up MONAI Label to annotate and fine-tune in 3D Slicer. Segmenting and training are the
bundle's own commands (``python -m monai.bundle run --config_file bundles/iternet/inference.json``);
``evaluate`` runs the bundle's ``evaluating`` with the command's options.
A bad input ends a command with one line naming the file and what is wrong (exit status 2)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from iternet_monai import __version__
from iternet_monai.data import BUILTIN_DATALISTS, DatalistError, make_datalist
from iternet_monai.utils.errors import COMMAND_PREFIX, InputError, find_input_error, print_problem
from iternet_monai.utils.files import atomic_write_json, check_evaluation_folder


def _evaluate(args: argparse.Namespace) -> int:
    check_evaluation_folder(args.output, args.overwrite)  # in a second: before torch, the maps or the model load
    if (args.ckpt is None) == (args.predictions is None):
        raise InputError("give exactly one of --ckpt (a model.pt to run) or --predictions (a folder of maps)")
    import logging

    from iternet_monai.engines.evaluation import run_evaluation
    from iternet_monai.handlers import summary_table

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = {"data_key": args.data_key, "use_fov": not args.no_fov, "threshold": args.threshold}
    options.update(gt_roundtrip=args.gt_roundtrip, connectivity=args.connectivity, overwrite=args.overwrite)
    options.update(mode=args.mode, sw_overlap=args.sw_overlap, sw_batch_size=args.sw_batch_size, tta=args.tta)
    options.update(backend=args.backend, device=args.device, ckpt_path=args.ckpt or None)
    options["report#log_summary"] = False  # the table goes to stdout below
    overrides = {k: v for k, v in options.items() if v is not None}
    content = run_evaluation(args.datalist, args.dataset_dir, args.output, args.predictions, **overrides)
    print(summary_table(content))
    print(f"wrote {args.output}/metrics.json, per_image.csv, roc.png, pr.png and overlays/")
    return 0


def _make_datalist(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.is_dir():
        raise DatalistError(f"--output {output} is a folder; give a file name, e.g. {output / 'datalist.json'}")
    if output.exists() and not args.overwrite:
        raise DatalistError(f"{output} exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        why = "is not a folder" if output.parent.exists() else "does not exist"
        raise DatalistError(f"cannot write {output}: {output.parent} {why}")
    content, notes = make_datalist(
        args.dataset_dir, args.images, args.labels, args.masks, args.test, args.label_pattern, args.mask_pattern
    )
    print("\n".join(notes))
    try:
        atomic_write_json(output, content)
    except OSError as err:
        raise DatalistError(f"cannot write {output}: {err.strerror or err}") from None
    counts = ", ".join(f"{len(v)} {k}" for k, v in content.items())
    print(f"wrote {output}: {counts} (paths relative to {args.dataset_dir})")
    return 0


def _label_app(args: argparse.Namespace) -> int:
    from iternet_monai.apps.monailabel.server import server_command, setup_app
    from iternet_monai.utils.files import BUNDLE_DIR

    app = setup_app(args.app_dir, args.bundle or BUNDLE_DIR)
    print(f"installed the bundle as {app}/model/iternet (weights: {app}/model/iternet/models); start MONAI Label:")
    print(" ".join(server_command(app, args.studies or "<studies folder>", args.port)))
    return 0


def _convert_studies(args: argparse.Namespace) -> int:
    from iternet_monai.apps.monailabel.server import convert_studies

    written = convert_studies(args.source, args.target, args.overwrite)
    print(f"wrote {len(written)} studies to {args.target}")
    return 0


def _measure(args: argparse.Namespace) -> int:
    from iternet_monai.biomarkers.measure import measure_folders, parse_rules

    return measure_folders(
        args.masks,
        args.output,
        probabilities=args.probabilities,
        images=args.images,
        fov_masks=args.fov_masks,
        mm_per_pixel=args.mm_per_pixel,
        rules=parse_rules(args.qc),
        overwrite=args.overwrite,
        datalist=args.datalist,
        dataset_dir=args.dataset_dir,
        data_key=args.data_key,
    )


def _add_make_datalist(commands: argparse._SubParsersAction) -> None:
    make = commands.add_parser(
        "make-datalist",
        help="write a datalist for a folder of images (+ labels, + FoV masks)",
        description="Pair every image with its label and FoV mask by file name and write a MONAI datalist whose "
        "paths are relative to --dataset-dir. Labels and masks may lie in their own folders or beside the images "
        "(CHASE_DB1's flat folder): they are recognised by --label-pattern / --mask-pattern or by the public "
        "datasets' names (DRIVE *_manual1 and *_mask, CHASE_DB1 *_1stHO, STARE *.ah, HRF *_manual, *_label, "
        "*_gt); other observers' labels (*_manual2, *_2ndHO, *.vk) are left out. Train with: python -m monai.bundle "
        "run training --config_file bundles/iternet/train.json --dataset_dir DIR --datalist OUTPUT",
    )
    make.add_argument("--dataset-dir", required=True, help="root folder; the datalist's paths are relative to it")
    make.add_argument(
        "--images", help="image folder, relative to --dataset-dir (default: images/ if it exists, else the root)"
    )
    make.add_argument("--labels", help="vessel label folder (default: labels beside the images, found by name)")
    make.add_argument("--masks", help="FoV mask folder (default: masks beside the images; derived when there are none)")
    make.add_argument(
        "--label-pattern",
        help="label file name, '*' standing for the image's name: '*_1stHO' (any suffix) or '*_manual1.gif'",
    )
    make.add_argument("--mask-pattern", help="FoV mask file name, as --label-pattern: '*_mask'")
    make.add_argument("--test", nargs="*", default=[], help="image names (file names without suffix) for 'testing'")
    make.add_argument("--output", required=True, help="datalist JSON to write")
    make.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    make.set_defaults(func=_make_datalist)


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    ev = commands.add_parser(
        "evaluate",
        help="score a model or saved probability maps on a datalist",
        description="Evaluate under one protocol: a model.pt run on every image, or any method's saved maps (PNG, "
        "TIFF, NPY, NIfTI) matched to the datalist's images by file stem. Runs the bundle's evaluation, the same as "
        "python -m monai.bundle run evaluating --config_file \"['bundles/iternet/configs/inference.json',"
        "'bundles/iternet/configs/evaluate.json']\" (docs/evaluation.md).",
    )
    ev.add_argument("--datalist", required=True, help=f"datalist JSON, or one of {', '.join(BUILTIN_DATALISTS)}")
    ev.add_argument("--dataset-dir", required=True, help="folder the datalist's paths are relative to")
    ev.add_argument("--data-key", default="testing", help="the datalist's list to evaluate (default: testing)")
    # --key: the option's earlier name, still read
    ev.add_argument("--key", dest="data_key", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    ev.add_argument(
        "--ckpt", nargs="?", const="", help="model.pt (state dict) of an IterNet to run; without a path the bundle's"
    )
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
    _add_model_options(ev)
    ev.set_defaults(func=_evaluate)


def _add_model_options(ev: argparse.ArgumentParser) -> None:
    """evaluate's options of the model's inference (with --ckpt)."""
    ev.add_argument(
        "--mode",
        default="auto",
        choices=("auto", "whole_image", "sliding_window"),
        help="with --ckpt: auto = sliding window on CUDA, whole image on CPU",
    )
    ev.add_argument(
        "--sw-overlap", type=float, help="sliding-window overlap (default: the bundle's, 1-3/128: the paper's stride 3)"
    )
    ev.add_argument("--sw-batch-size", type=int, help="windows per forward pass (default: the bundle's, 256)")
    ev.add_argument("--tta", action="store_true", help="with --ckpt: flip averaging (4 passes; see inference)")
    ev.add_argument(
        "--backend",
        choices=("auto", "pytorch", "onnxruntime"),
        default="auto",
        help="with --ckpt: auto = ONNX Runtime on a CPU where it is installed, PyTorch otherwise",
    )
    ev.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")


def _add_measure(commands: argparse._SubParsersAction) -> None:
    me = commands.add_parser(
        "measure",
        help="vessel biomarkers and quality control of a folder of vessel maps",
        description="Measure every binary vessel map of --masks, or the label of every item of a --datalist "
        "(density, length, fractal dimension, per-segment length, tortuosity and calibre) and check its quality; "
        "files of the other folders are matched by file stem (<stem>_mask / <stem>_prob as inference writes them). "
        "Writes biomarkers.csv, segments.csv, quality.csv, columns.json (every column and unit), figures/<stem>.png "
        "and cohort.png. See docs/biomarkers.md.",
    )
    me.add_argument("--masks", help="folder of binary vessel maps (PNG, GIF, TIFF, NPY, NIfTI)")
    me.add_argument(
        "--datalist",
        help="instead of --masks: measure the labels of a datalist's items (drive, chase_db1, stare or a JSON file), "
        "with their photographs and FoV masks, e.g. a dataset's reference annotations",
    )
    me.add_argument("--dataset-dir", help="folder the datalist's paths start from")
    me.add_argument("--data-key", default="testing", help="the datalist's list to measure (default testing)")
    me.add_argument("--probabilities", help="folder of probability maps (for the uncertainty checks)")
    me.add_argument("--images", help="folder of the photographs (figures, exposure and contrast, FoV)")
    me.add_argument("--fov-masks", help="folder of FoV masks (else derived from the photographs, else whole image)")
    me.add_argument("--mm-per-pixel", type=float, help="pixel size; adds every length, width and area in mm, mm^2")
    me.add_argument(
        "--qc",
        nargs="*",
        default=[],
        metavar="MEASURE.LIMIT=VALUE",
        help="change a quality limit, e.g. exposure.check_below=0.08 (docs/biomarkers.md lists them)",
    )
    me.add_argument("--output", required=True, help="output folder")
    me.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run there")
    me.set_defaults(func=_measure)


def _cohort(args: argparse.Namespace) -> int:
    from iternet_monai.biomarkers.measure import parse_rules
    from iternet_monai.cohort import CohortOptions, run_cohort

    options = {k: v for k, v in vars(args).items() if k not in ("command", "func", "qc")}
    return run_cohort(CohortOptions(**options, rules=parse_rules(args.qc) if args.qc else None))


def _add_cohort(commands: argparse._SubParsersAction) -> None:
    co = commands.add_parser(
        "cohort",
        help="segment, check and measure a whole cohort on Ray, resumably",
        description="Segment, quality-check and measure every photograph of a manifest CSV (id,path and optional "
        "mm_per_pixel, eye, ...) or a folder with the bundle's inference pipeline and the measure command's code, "
        "on Ray (pip install -e '.[cohort]'): per image its maps and result, then biomarkers.csv/.parquet, "
        "segments.csv, quality.csv, failures.csv, columns.json, cohort.png and report.html. A rerun skips what is "
        "done under the same photograph, weights and settings. See docs/cohort.md.",
    )
    co.add_argument("source", help="manifest CSV (id,path[,mm_per_pixel,eye,...]) or a folder of photographs")
    co.add_argument("--output", required=True, help="cohort folder (made if needed; a rerun resumes it)")
    co.add_argument("--ckpt", help="model.pt to run (default: the bundle's)")
    co.add_argument("--address", help="Ray cluster: auto, HOST:PORT or ray://host:port (default: Ray on this machine)")
    co.add_argument("--workers", type=int, default=1, help="segmenting actors, each holding the model (default 1)")
    co.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per actor (default 0: on the CPU)")
    co.add_argument("--cpus", type=int, help="CPUs Ray may use on this machine (default: all)")
    co.add_argument("--shard", help="i/N: run shard i (from 0) of N here without Ray, e.g. $SLURM_ARRAY_TASK_ID/N")
    co.add_argument("--gather", action="store_true", help="build the tables and report.html from the shards' results")
    co.add_argument("--mm-per-pixel", type=float, help="pixel size of the images the manifest gives none for")
    co.add_argument("--qc", nargs="*", default=[], metavar="MEASURE.LIMIT=VALUE", help="change a quality limit")
    co.add_argument("--mode", default="auto", choices=("auto", "whole_image", "sliding_window"), help="inferer mode")
    co.add_argument("--tta", action="store_true", help="flip averaging (4 passes)")
    co.add_argument("--backend", default="auto", choices=("auto", "pytorch", "onnxruntime"), help="as evaluate's")
    co.add_argument("--max-pixels", type=int, default=16777216, help="photographs of more pixels fail (default 4096^2)")
    co.set_defaults(func=_cohort)


def _add_label_app(commands: argparse._SubParsersAction) -> None:
    app = commands.add_parser(
        "label-app",
        help="set up a MONAI Label app folder with this bundle",
        description="Make a MONAI Label app (iternet_monai.apps.monailabel) serving a copy of the bundle. Run in the "
        "MONAI Label environment (docs/monailabel.md).",
    )
    app.add_argument("--app-dir", default="apps/iternet", help="app folder to create (default: apps/iternet)")
    app.add_argument("--bundle", help="bundle folder (default: the package's own, bundles/iternet in the repository)")
    app.add_argument("--studies", help="studies folder, shown in the printed start command")
    app.add_argument(
        "--port", type=int, default=8000, help="port in the printed start command (default: 8000, on this machine only)"
    )
    app.set_defaults(func=_label_app)


def _add_convert_studies(commands: argparse._SubParsersAction) -> None:
    conv = commands.add_parser(
        "convert-studies",
        help="copy photographs as PNG for MONAI Label's datastore",
        description="Copy every photograph of SOURCE into TARGET as a file MONAI Label's datastore lists: GIF, PPM, "
        "TIFF and BMP become RGB PNG, PNG and JPEG are copied, each under a unique name, written atomically. Nothing "
        "is written when a target file exists, unless --overwrite.",
    )
    conv.add_argument("source", help="folder of photographs (GIF, PPM, TIFF, BMP, PNG, JPEG)")
    conv.add_argument("target", help="studies folder for MONAI Label (made if needed; --studies of label-app)")
    conv.add_argument("--overwrite", action="store_true", help="replace files of the same names in target")
    conv.set_defaults(func=_convert_studies)


def build_parser() -> argparse.ArgumentParser:
    """The ``iternet-monai`` parser: one sub-command per task, each with its own builder."""
    parser = argparse.ArgumentParser(prog="iternet-monai", description=__doc__.replace("``", "'"))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_make_datalist, _add_evaluate, _add_measure, _add_cohort, _add_label_app, _add_convert_studies):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:
        found = find_input_error(err)  # MONAI wraps an error raised while it builds a config item
        if found is None:
            raise
        print_problem(found, COMMAND_PREFIX)
        return 2


if __name__ == "__main__":
    sys.exit(main())
