"""The cohort command's speed beside the bundle's batch inference on the same photographs (a benchmark, not a test).

    python benchmarks/cohort_speed.py --photos DRIVE/test/images --more-photos DRIVE/training/images \
        --out cohort_speed.json [--cpus 2] [--repeats 3]

Runs, one after the other, as a user runs them: ``inference.json`` with ``--measure true`` (segment and measure a
folder), ``iternet-monai cohort`` on Ray (started by the command, ``--cpus``), and ``iternet-monai cohort --shard 0/1``
(no Ray); each from a new process into a new folder, wall time included start-up, ``--repeats`` times in turn (the
median is reported, and every time); with ``--more-photos``, each again on both folders together, which gives each
command's rate once started (the images added over the time added, of the medians). Then, in this process on one
thread, the cost of each stage of one image (:mod:`iternet_monai.cohort.work`: hash, decode and check, segment,
measure and write), and from those the projected wall time of a cohort of ``--project`` images on whole machines,
assuming stages scale with cores (written as the projection's assumptions in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from iternet_monai.cohort.manifest import cohort_items
from iternet_monai.cohort.store import CohortFolder
from iternet_monai.cohort.work import CohortSettings, Segmenter, finish, prepare, preprocessing
from iternet_monai.utils.files import BUNDLE_DIR, atomic_write_json, bundle_weights, file_sha256

UK_BIOBANK = 135_867  # fundus photographs (68,549 people)


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of ``command`` (it must succeed, or exit 1 for images that failed)."""
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode not in (0, 1):
        raise SystemExit(f"{command[:4]} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def commands(photos: Path, work: Path, cpus: int) -> dict[str, float]:
    """Wall seconds of batch inference, the cohort on Ray and the cohort in one shard on the photographs (outputs
    under ``work``)."""
    work.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(cpus)}
    cli = [sys.executable, "-c", "import sys; from iternet_monai.cli import main; sys.exit(main(sys.argv[1:]))"]
    inference = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE_DIR / "inference.json")]
    inference += ["--dataset_dir", str(photos), "--output_dir", str(work / "inference"), "--measure", "true"]
    cohort = [*cli, "cohort", str(photos), "--backend", "pytorch"]
    return {
        "bundle inference --measure true": timed(inference + ["--backend", "pytorch"], env),
        "cohort on Ray": timed([*cohort, "--output", str(work / "ray"), "--cpus", str(cpus)], env),
        "cohort --shard 0/1": timed([*cohort, "--output", str(work / "shard"), "--shard", "0/1"], env),
    }


def repeated(photos: Path, work: Path, cpus: int, repeats: int) -> dict[str, list[float]]:
    """:func:`commands` ``repeats`` times in turn, each time into new folders: every command's wall seconds."""
    runs = [commands(photos, work / f"run{n}", cpus) for n in range(repeats)]
    return {name: [run[name] for run in runs] for name in runs[0]}


def stages(photos: Path, work: Path) -> dict[str, float]:
    """Mean seconds per image of each stage on one thread (the segmenter built once, not timed)."""
    import torch

    torch.set_num_threads(1)
    items = cohort_items(str(photos), None)
    settings = CohortSettings(str(work / "stages"), str(bundle_weights(BUNDLE_DIR)), backend="pytorch")
    output_settings = settings.output_settings(file_sha256(settings.ckpt_path))
    folder, transform = CohortFolder(settings.output_dir), preprocessing(settings.max_pixels)
    segmenter = Segmenter(settings)
    totals = dict.fromkeys(("hash", "decode and check", "segment", "measure and write"), 0.0)
    for item in items:
        start = time.perf_counter()
        file_sha256(item.path)
        totals["hash"] += time.perf_counter() - start
        start = time.perf_counter()
        row = prepare(item, output_settings, transform, folder)  # hashes again: subtracted below
        totals["decode and check"] += time.perf_counter() - start
        start = time.perf_counter()
        row = segmenter(row)
        totals["segment"] += time.perf_counter() - start
        start = time.perf_counter()
        finish(row, item, settings, folder)
        totals["measure and write"] += time.perf_counter() - start
    totals["decode and check"] -= totals["hash"]
    return {name: seconds / len(items) for name, seconds in totals.items()}


def projection(per_image: dict[str, float], images: int) -> dict[str, dict]:
    """Projected wall hours of ``images`` on one 16-core node, on 100 such nodes, and on a node of 8 GPUs with 64
    cores, from the one-thread cost of each stage (no GPU measured here: the GPU row gives the rate each GPU needs
    for the CPU stages to be the bound)."""
    core_seconds = sum(per_image.values())
    cpu_stages = core_seconds - per_image["segment"]
    return {
        "1 node, 16 cores": {"hours": images * core_seconds / 16 / 3600, "assumes": "all stages on 16 cores, linear"},
        "100 nodes, 1,600 cores": {"hours": images * core_seconds / 1600 / 3600, "assumes": "linear over nodes"},
        "8 GPUs, 64 cores": {
            "hours": images * cpu_stages / 64 / 3600,
            "assumes": f"segmenting on the GPUs at >= {64 / cpu_stages / 8:.0f} images/s each (not measured here), "
            "hashing, decoding and measuring on 64 cores, linear",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="a folder of photographs (DRIVE's 20 test images)")
    parser.add_argument("--more-photos", type=Path, help="more photographs, for the rates once started")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file of the results")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs for the commands")
    parser.add_argument("--repeats", type=int, default=1, help="times each command runs (the median is reported)")
    parser.add_argument("--project", type=int, default=UK_BIOBANK, help="images of the projected cohort")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cohort_speed_"))
    try:
        images = len(cohort_items(str(args.photos), None))
        walls = repeated(args.photos, work / "first", args.cpus, args.repeats)
        if args.more_photos:
            both = work / "both"
            both.mkdir()
            for photo in [*args.photos.iterdir(), *args.more_photos.iterdir()]:
                (both / photo.name).symlink_to(photo.resolve())
            more = len(cohort_items(str(both), None)) - images
            walls_both = repeated(both, work / "second", args.cpus, args.repeats)
        per_image = stages(args.photos, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {name: statistics.median(times) for name, times in walls.items()}
    baseline = median["bundle inference --measure true"]
    rows = {
        name: {
            "seconds": s,
            "seconds_each": walls[name],
            "images_per_second": images / s,
            "vs_inference": s / baseline - 1,
        }
        for name, s in median.items()
    }
    if args.more_photos:
        for name, row in rows.items():
            with_more = statistics.median(walls_both[name])
            row[f"seconds_with_{more}_more"], row[f"seconds_with_{more}_more_each"] = with_more, walls_both[name]
            row["images_per_second_once_started"] = more / (with_more - median[name])
    results = {
        "device": f"CPU ({platform.processor() or platform.machine()}), {args.cpus} CPUs for the commands",
        "images": images,
        "commands": rows,
        "stage_seconds_per_image_one_thread": per_image,
        "projection": projection(per_image, args.project),
        "projected_images": args.project,
    }
    atomic_write_json(args.out, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
