"""Inference and training speed of IterNet on the current device (a benchmark, not a test).

    python benchmarks/speed.py --dataset-dir /data/DRIVE [--ckpt model.pt] [--images 20] [--modes whole stride8 stride3]

Per-image inference time, images/s and peak memory for whole-image, stride-8 and stride-3 sliding windows (bf16
autocast on CUDA), the AUC of each mode on the DRIVE test images and its difference from whole-image, and training
throughput (patches/s) of the full network at batch 32. On a CPU, windowed modes are timed on ``--max-windows``
windows and extrapolated to the whole image (marked "estimated"); their AUC is then not computed.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose

from iternet_monai.data import builtin_datalist, load_datalist
from iternet_monai.inferers import WholeImageInferer, sliding_window_count
from iternet_monai.losses import IterNetLoss
from iternet_monai.metrics import pixel_auc
from iternet_monai.networks import IterNet, iternet_from_state_dict
from iternet_monai.transforms import FieldOfViewd, fundus_loading

OVERLAPS = {"stride8": 1 - 8 / 128, "stride3": 1 - 3 / 128}


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


@torch.inference_mode()
def time_mode(mode, net, images, device, sw_batch_size, max_windows):
    amp = device.type == "cuda"
    if mode == "whole":
        inferer = WholeImageInferer()
    else:
        inferer = SlidingWindowInferer((128, 128), sw_batch_size, OVERLAPS[mode], mode="constant")
    estimated = device.type != "cuda" and mode != "whole"
    times, probs = [], []
    for image in images:
        x = image[None].to(device)
        if estimated:  # time max_windows windows and scale to the image's window count
            windows = torch.rand(max_windows, 3, 128, 128, device=device)
            start = time.perf_counter()
            for chunk in windows.split(sw_batch_size):
                net(chunk)
            per_window = (time.perf_counter() - start) / max_windows
            times.append(per_window * sliding_window_count(*x.shape[-2:], overlap=OVERLAPS[mode]))
            break
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = inferer(x.contiguous(memory_format=torch.channels_last), net)
        sync(device)
        times.append(time.perf_counter() - start)
        probs.append(torch.sigmoid(logits.float())[0, 0].cpu().numpy())
    return times, probs, estimated


def training_throughput(device, steps=3, batch=32):
    net = IterNet().to(device, memory_format=torch.channels_last).train()
    loss_fn, optimizer = IterNetLoss(), torch.optim.Adam(net.parameters(), 1e-3, eps=1e-7)
    x = torch.rand(batch, 3, 128, 128, device=device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 1, 128, 128, device=device) > 0.8).float()
    amp = device.type == "cuda"
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
    parser.add_argument("--modes", nargs="+", default=["whole", "stride8", "stride3"])
    parser.add_argument("--sw-batch-size", type=int, default=512)
    parser.add_argument("--max-windows", type=int, default=64, help="windows timed per mode on a CPU")
    parser.add_argument("--no-training", action="store_true")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    state = torch.load(args.ckpt, map_location="cpu", weights_only=True) if args.ckpt else None
    net = iternet_from_state_dict(state.get("model", state)) if state else IterNet()
    net = net.to(device, memory_format=torch.channels_last).eval()
    items = load_datalist(args.datalist, args.dataset_dir, "testing")[: args.images]
    load = Compose(fundus_loading() + [FieldOfViewd("mask")])
    data = [load(item) for item in items]
    images = [torch.as_tensor(d["image"]) for d in data]
    results = {
        "device": device_name(device),
        "torch": torch.__version__,
        "weights": args.ckpt or "random",
        "images": len(images),
        "modes": {},
    }
    probs_by_mode = {}
    for mode in args.modes:
        times, probs, estimated = time_mode(mode, net, images, device, args.sw_batch_size, args.max_windows)
        entry = {
            "seconds_per_image": float(np.mean(times)),
            "images_per_second": 1 / float(np.mean(times)),
            "peak_memory_mb": peak_memory_mb(device),
            "estimated": estimated,
        }
        if probs and args.ckpt:
            fov = [d["mask"][0].numpy() > 0.5 for d in data]
            truth = [d["label"][0].numpy() > 0.5 for d in data]
            entry["auc"] = pixel_auc(
                np.concatenate([p[f] for p, f in zip(probs, fov)]).astype(np.float64),
                np.concatenate([t[f] for t, f in zip(truth, fov)]),
            )
            probs_by_mode[mode] = probs
        results["modes"][mode] = entry
        print(mode, json.dumps(entry))
    if "whole" in probs_by_mode:
        for entry in results["modes"].values():
            if "auc" in entry:
                entry["auc_minus_whole"] = entry["auc"] - results["modes"]["whole"]["auc"]
    if not args.no_training:
        results["training"] = training_throughput(device)
        print("training", json.dumps(results["training"]))
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
