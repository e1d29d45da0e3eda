"""How fast the bundle's training data loader delivers batches, without the network (a benchmark, not a test).

    python benchmarks/loader_speed.py --dataset-dir /data/DRIVE [--seconds 10] [--output loader.json] \
        [-- --key value ...]

The loader is ``train.json``'s own (``train#dataloader``: cached images, the paper's augmentation, 4 patches from
each of 8 images a batch), built with the overrides after ``--`` as ``monai.bundle run`` would take them (e.g.
``--cache_device cuda --train#dataloader#_target_ ThreadDataLoader``). Every augmentation runs through
MONAI's transforms in Python, a cost the GPU does not lower: whether the loader keeps up with the network decides
the training speed. The GPU run times each of its training configurations this way and trains with the fastest.
"""

from __future__ import annotations

import argparse
import time

import torch
from monai.bundle import ConfigParser

from iternet_monai.engines.checkpoints import BUNDLE_DIR
from iternet_monai.utils.files import atomic_write_json


def override_pairs(values: list[str]) -> dict:
    """``["--key", "value", ...]`` as monai.bundle's command line reads them (values parsed as Python literals)."""
    import ast

    if len(values) % 2 or not all(key.startswith("--") for key in values[::2]):
        raise SystemExit(f"loader_speed: overrides come as --key value pairs, got {values}")
    pairs = {}
    for key, value in zip(values[::2], values[1::2]):
        try:
            pairs[key[2:]] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pairs[key[2:]] = value
    return pairs


def draw(loader, seconds: float, device: torch.device) -> tuple[float, int, int, float]:
    """(seconds to the first batch, batches, patches, seconds) of drawing batches for ``seconds`` after the first;
    the loader is iterated again, as the trainer does, when an epoch of it ends."""
    first, batches, patches = None, 0, 0
    start = time.perf_counter()
    while True:
        for batch in loader:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            if first is None:  # the first batch includes the workers' start
                first, start = now - start, now
                continue
            batches, patches = batches + 1, patches + len(batch["image"])
            if now - start >= seconds:
                return first, batches, patches, now - start
        if first is None:
            raise SystemExit("loader_speed: the training loader gave no batch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--datalist", help="datalist JSON (default: train.json's, the built-in DRIVE list)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to draw batches after the first")
    parser.add_argument("--output", help="write the result as JSON here")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="-- --key value ...: train.json overrides")
    args = parser.parse_args()
    overrides = override_pairs([v for v in args.overrides if v != "--"])
    config = ConfigParser()
    config.read_config(str(BUNDLE_DIR / "configs" / "train.json"))
    config.update({"dataset_dir": args.dataset_dir, **({"datalist": args.datalist} if args.datalist else {})})
    config.update(overrides)
    device = torch.device(config.get_parsed_content("device"))
    start = time.perf_counter()
    loader = config.get_parsed_content("train#dataloader")  # caches the images
    cached = time.perf_counter() - start
    first, batches, patches, seconds = draw(loader, args.seconds, device)
    result = {
        "overrides": overrides,
        "device": str(device),
        "cache_seconds": round(cached, 2),
        "first_batch_seconds": round(first, 2),
        "batches": batches,
        "batches_per_second": batches / seconds,
        "patches_per_second": patches / seconds,
    }
    print(f"loader: {result['patches_per_second']:.0f} patches/s ({batches} batches in {seconds:.1f} s) {overrides}")
    if args.output:
        atomic_write_json(args.output, result)


if __name__ == "__main__":
    main()
