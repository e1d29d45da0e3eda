"""The ``iternet-monai`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .data import DatalistError, make_datalist


def _make_datalist(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise DatalistError(f"{output} exists; pass --overwrite to replace it")
    content = make_datalist(args.dataset_dir, args.images, args.labels, args.masks, args.test)
    output.write_text(json.dumps(content, indent=1) + "\n")
    counts = ", ".join(f"{len(v)} {k}" for k, v in content.items())
    print(f"wrote {output}: {counts} (paths relative to {args.dataset_dir})")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DatalistError as err:
        print(f"iternet-monai: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
