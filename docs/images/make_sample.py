"""The README's picture: the embedded sample photograph, its vessel probability map and overlay, side by side, from
the README's main command's outputs.

    python -m monai.bundle run --config_file bundles/iternet/inference.json --output_dir predictions
    python docs/images/make_sample.py predictions
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

PANEL = 320  # pixels a side of each panel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path, help="the inference command's output folder")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("sample.png"))
    args = parser.parse_args()
    (probability,) = args.predictions.glob("*_prob.png")
    overlay = probability.with_name(probability.name.replace("_prob.png", "_overlay.png"))
    maps = [Image.open(path).convert("RGB") for path in (probability, overlay)]
    panels = [Image.fromarray(data.retina()), *maps]
    row = np.concatenate([np.asarray(p.resize((PANEL, PANEL), Image.LANCZOS)) for p in panels], axis=1)
    temporary = args.output.with_suffix(".partial.png")
    Image.fromarray(row).save(temporary, optimize=True)
    temporary.replace(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
