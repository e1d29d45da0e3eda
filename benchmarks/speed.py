"""Inference and training speed of IterNet on the current device (a benchmark, not a test).

    python benchmarks/speed.py --dataset-dir /data/DRIVE [--ckpt model.pt] [--images 20] [--modes whole stride8 stride3]

Inference runs the bundle's one pipeline (``inference.json``: its network, inferer and bf16 autocast on CUDA, and its
postprocessing's sigmoid) and reports per-image seconds, images/s and peak memory for whole-image, stride-8 and stride-3
sliding windows, with the AUC of each mode on the DRIVE test images and, on CUDA, the AUC change of bf16 against fp32
on one image. Training reports a plain PyTorch loop of the full network at batch 32 (forward, 4-output BCE, backward,
Adam; bf16 and channels-last on CUDA), the reference for the bundle's own trainer, whose speed the training log and
``train_stats.json`` give. On a CPU, windowed modes are timed on ``--max-windows`` windows and extrapolated to the
whole image (marked "estimated"); their AUC is then not computed.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import torch
from monai.transforms import Compose

from iternet_monai.data import builtin_datalist, load_datalist
from iternet_monai.engines import load_pipeline
from iternet_monai.inferers.inferer import PAPER_OVERLAP, STITCHINGS, sliding_window_count
from iternet_monai.losses.iternet_loss import IterNetLoss
from iternet_monai.metrics import pixel_auc
from iternet_monai.networks import IterNet
from iternet_monai.transforms import FieldOfViewd, fundus_loading
from iternet_monai.utils.files import atomic_write_json

MODES = {
    "whole": ("whole_image", 0.0),
    "stride8": ("sliding_window", 1 - 8 / 128),
    "stride3": ("sliding_window", PAPER_OVERLAP),
}


def device_name(device: torch.device) -> str:
    return (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or 'x86_64'}, {torch.get_num_threads()} threads)"
    )


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pipeline_predictor(args: argparse.Namespace, mode: str, device: torch.device, amp: bool | None = None):
    """The probabilities of the bundle's pipeline in ``mode`` (``inference.json``'s network, inferer under its bf16
    autocast, and postprocessing's sigmoid) as a function of a loaded item, and its network (for CPU window timing)."""
    inferer_mode, overlap = MODES[mode]
    overrides = {"mode": inferer_mode, "sw_overlap": overlap, "sw_batch_size": args.sw_batch_size, "device": device}
    overrides.update(ckpt_path=args.ckpt, compile=args.compile, sw_buffer_steps=args.buffer_steps)
    overrides.update(sw_stitching=args.stitching)
    pipeline = load_pipeline(**overrides)
    network, inferer = pipeline.get_parsed_content("network"), pipeline.get_parsed_content("inferer")
    postprocessing = pipeline.get_parsed_content("postprocessing")
    amp = pipeline.get_parsed_content("amp") if amp is None else amp

    def predict(data: dict) -> np.ndarray:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = inferer(data["image"][None].to(device), network)
        return postprocessing({"pred": logits[0]})["prob"][0].cpu().numpy()

    return predict, network


def auc(probs: list[np.ndarray], data: list[dict]) -> float:
    fov = [d["mask"][0].numpy() > 0.5 for d in data]
    truth = [d["label"][0].numpy() > 0.5 for d in data]
    return pixel_auc(
        np.concatenate([p[f] for p, f in zip(probs, fov)]), np.concatenate([t[f] for t, f in zip(truth, fov)])
    )


@torch.inference_mode()
def time_mode(args, mode, device, data):
    predict, network = pipeline_predictor(args, mode, device)
    if device.type != "cuda" and mode != "whole":  # time max_windows windows, scale to the image's window count
        windows = torch.rand(args.max_windows, 3, 128, 128).contiguous(memory_format=torch.channels_last)
        start = time.perf_counter()
        for chunk in windows.split(args.sw_batch_size):
            network(chunk)
        per_window = (time.perf_counter() - start) / args.max_windows
        return [per_window * sliding_window_count(*data[0]["image"].shape[-2:], overlap=MODES[mode][1])], [], True
    predict(data[0])  # warm-up: cuDNN autotuning, compilation
    times, probs = [], []
    for item in data:
        sync(device)
        start = time.perf_counter()
        probs.append(predict(item))
        sync(device)
        times.append(time.perf_counter() - start)
    return times, probs, False


def bf16_auc_change(args, mode, device, item) -> float:
    """AUC of the bf16 pipeline minus that of fp32, on one image (the tolerance is 1e-4)."""
    fp32, _ = pipeline_predictor(args, mode, device, amp=False)
    bf16, _ = pipeline_predictor(args, mode, device, amp=True)
    with torch.inference_mode():
        return auc([bf16(item)], [item]) - auc([fp32(item)], [item])


def training_throughput(device, steps=10, batch=32, features=32):
    """A plain PyTorch training loop of the network (the full one by default): the reference for the bundle's
    trainer."""
    channels_last = torch.channels_last
    net = IterNet(features=features).to(device, memory_format=channels_last).train()
    loss_fn, optimizer = IterNetLoss(), torch.optim.Adam(net.parameters(), 1e-3, eps=1e-7)
    x = torch.rand(batch, 3, 128, 128, device=device).contiguous(memory_format=channels_last)
    y = (torch.rand(batch, 1, 128, 128, device=device) > 0.8).float()
    amp = device.type == "cuda"
    steps = steps if amp else 3
    durations = []
    for _ in range(steps + 1):
        sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        sync(device)
        durations.append(time.perf_counter() - start)
    step = float(np.median(durations[1:]))
    return {"seconds_per_step": step, "patches_per_second": batch / step, "batch": batch, "amp_bf16": amp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--datalist", default=builtin_datalist("drive"))
    parser.add_argument("--ckpt", help="trained model.pt; without it the weights are random (timing only)")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--sw-batch-size", type=int, default=512)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA)")
    parser.add_argument("--stitching", default="batched", choices=STITCHINGS, help="sliding window stitching")
    parser.add_argument("--buffer-steps", type=int, help="MONAI's buffered stitching (with --stitching monai)")
    parser.add_argument("--max-windows", type=int, default=64, help="windows timed per mode on a CPU")
    parser.add_argument("--no-training", action="store_true")
    parser.add_argument("--features", type=int, default=32, help="width of the plain training loop's network")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    items = load_datalist(args.datalist, args.dataset_dir, "testing")[: args.images]
    load = Compose(fundus_loading() + [FieldOfViewd("mask")])
    data = [load(item) for item in items]
    results = {
        "device": device_name(device),
        "torch": torch.__version__,
        "weights": args.ckpt or "random",
        "images": len(data),
        "sw_batch_size": args.sw_batch_size,
        "compile": args.compile,
        "stitching": args.stitching,
        "buffer_steps": args.buffer_steps,
        "modes": {},
    }
    for mode in args.modes:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times, probs, estimated = time_mode(args, mode, device, data)
        entry = {
            "seconds_per_image": float(np.mean(times)),
            "images_per_second": 1 / float(np.mean(times)),
            "peak_memory_mb": peak_memory_mb(device),
            "estimated": estimated,
        }
        if probs and args.ckpt:
            entry["auc"] = auc(probs, data)
            if device.type == "cuda":
                entry["auc_bf16_minus_fp32_one_image"] = bf16_auc_change(args, mode, device, data[0])
        results["modes"][mode] = entry
        print(mode, json.dumps(entry), flush=True)
        if args.output:  # after every mode, so a run stopped part-way keeps what it measured
            atomic_write_json(args.output, results)
    if not args.no_training:
        results["training_plain_loop"] = training_throughput(device, features=args.features)
        print("training (plain loop)", json.dumps(results["training_plain_loop"]), flush=True)
    if args.output:
        atomic_write_json(args.output, results)


if __name__ == "__main__":
    main()
