"""PyTorch against ONNX Runtime for whole-image inference on the CPU (a benchmark, not a test).

    python benchmarks/onnx_cpu.py --image ../shared/data/DRIVE/test/images/01_test.tif [--ckpt model.pt] [--repeats 5]

Exports the network to ONNX with MONAI's ``convert_to_onnx`` (the options of ``inferers.ONNX_EXPORT``), then times
one whole-image forward pass of the same padded photograph in PyTorch (fp32, channels-last, as inference runs it) and
in ONNX Runtime (CPUExecutionProvider), alternating the two so that both see the same machine load; prints the
medians and the largest difference of the logits.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.networks.utils import convert_to_onnx
from monai.transforms import Compose

from iternet_monai.engines.checkpoints import iternet_for_weights
from iternet_monai.inferers.inferer import ONNX_EXPORT
from iternet_monai.transforms.fundus import fundus_loading


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="a fundus photograph")
    parser.add_argument("--ckpt", help="model.pt; without it a randomly initialised full-size network")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args()
    import onnxruntime

    network = iternet_for_weights(args.ckpt).eval()
    image = Compose(fundus_loading(["image"]))({"image": args.image})["image"][None].as_tensor()
    width, height = image.shape[-2:]  # MONAI's (W, H) arrays
    padded = torch.nn.functional.pad(image, (0, -height % 16, 0, -width % 16))
    with tempfile.TemporaryDirectory() as folder:
        onnx_file = str(Path(folder) / "iternet.onnx")
        convert_to_onnx(network, inputs=[padded[..., :64, :64]], filename=onnx_file, verify=False, **ONNX_EXPORT)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(onnx_file, options, providers=["CPUExecutionProvider"])
    channels_last = network.to(memory_format=torch.channels_last)
    torch_input = padded.contiguous(memory_format=torch.channels_last)
    numpy_input = padded.numpy()
    times: dict[str, list[float]] = {"pytorch": [], "onnxruntime": []}
    with torch.inference_mode():
        for repeat in range(args.repeats + 1):  # the first round warms both up and is not counted
            start = time.perf_counter()
            reference = channels_last(torch_input).numpy()
            torch_time = time.perf_counter() - start
            start = time.perf_counter()
            logits = session.run(None, {ONNX_EXPORT["input_names"][0]: numpy_input})[0]
            ort_time = time.perf_counter() - start
            if repeat:
                times["pytorch"].append(torch_time)
                times["onnxruntime"].append(ort_time)
    results = {
        "image": f"{args.image} ({width}x{height}, padded to {padded.shape[-2]}x{padded.shape[-1]})",
        "weights": args.ckpt or "random",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "seconds": {k: {"median": float(np.median(v)), "all": [round(t, 3) for t in v]} for k, v in times.items()},
        "max_abs_logit_difference": float(np.abs(logits - reference).max()),
    }
    print(json.dumps(results, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
