"""What the sliding window costs besides the network: MONAI's window loop (plain and buffered) against the batched
stitching, on one DRIVE-sized image at the paper's stride 3 (22,491 windows of 128x128), with a network that does
nothing, so only cutting windows out and adding them back is timed (a benchmark, not a test).

    python benchmarks/stitching.py [--device cuda] [--repeats 3] [--size 584 565] [--roi 128] [--stride 3]
                                   [--output stitching.json]

On a GPU this is the overhead on top of the network's time per image; on a CPU it is mostly memory traffic.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from speed import device_name, sync

from iternet_monai.inferers.inferer import BatchedSlidingWindowInferer, sliding_window_count
from iternet_monai.utils.files import atomic_write_json

VARIANTS = {
    "monai": (SlidingWindowInferer, {}),
    "monai_buffer_steps_4": (SlidingWindowInferer, {"buffer_steps": 4}),
    "batched": (BatchedSlidingWindowInferer, {}),
}


def do_nothing(windows: torch.Tensor) -> torch.Tensor:
    return windows[:, :1] * 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sw-batch-size", type=int, default=512)
    parser.add_argument("--size", type=int, nargs=2, default=(584, 565), help="image height and width (DRIVE's)")
    parser.add_argument("--roi", type=int, default=128, help="window side (tiny windows time the per-window work)")
    parser.add_argument("--stride", type=int, default=3)
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)
    image = torch.rand(1, 3, *args.size, device=device)
    overlap = 1 - args.stride / args.roi
    results = {
        "device": device_name(device),
        "size": list(args.size),
        "roi": args.roi,
        "stride": args.stride,
        "windows": sliding_window_count(*args.size, roi=args.roi, overlap=overlap),
        "sw_batch_size": args.sw_batch_size,
        "seconds_per_image": {},
    }
    for name, (inferer_class, options) in VARIANTS.items():
        roi = (args.roi, args.roi)
        inferer = inferer_class(roi, args.sw_batch_size, overlap, mode="constant", **options)
        times = []
        with torch.inference_mode():
            for _ in range(args.repeats + 1):  # the first run warms up
                sync(device)
                start = time.perf_counter()
                inferer(image, do_nothing)
                sync(device)
                times.append(time.perf_counter() - start)
        results["seconds_per_image"][name] = float(np.median(times[1:]))
        print(f"{name}: {results['seconds_per_image'][name]:.3f} s per image", flush=True)
    if args.output:
        atomic_write_json(args.output, results)


if __name__ == "__main__":
    main()
