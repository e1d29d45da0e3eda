"""The ``iternet-monai cohort`` command: segment, check and measure every photograph of a manifest or folder on Ray
(:mod:`.ray_run`), or one ``--shard i/N`` of them without Ray, then (``--gather``) the cohort tables and report.

A rerun of the same command skips the images whose results exist under the same key (the photograph's sha256, the
weights' sha256 and the settings that change the outputs) and recomputes the rest."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from iternet_monai.cohort.manifest import CohortItem, cohort_items, shard_of
from iternet_monai.cohort.progress import Progress
from iternet_monai.cohort.store import CohortFolder
from iternet_monai.cohort.tables import CohortCounts, gather
from iternet_monai.cohort.work import CohortSettings, Segmenter, finish, prepare, preprocessing
from iternet_monai.utils.errors import COMMAND_PREFIX, InputError, print_problem
from iternet_monai.utils.files import BUNDLE_DIR, bundle_weights, check_writable_folder, file_sha256

__all__ = ["CohortOptions", "run_cohort", "local_rows"]


@dataclasses.dataclass
class CohortOptions:
    """The command's options (``iternet-monai cohort --help``).

    Args:
        source: a manifest CSV (``id,path``, optional ``mm_per_pixel``, ``eye``, ...) or a folder of photographs.
        output: the cohort folder.
        ckpt: the weights; the bundle's ``models/model.pt`` by default.
        shard: ``"i/N"``: run the i-th of N shards here, without Ray.
        gather: only build the tables and the report from the stored results.
        address: a Ray cluster (``auto``, ``ray://host:port``); None starts Ray on this machine.
        workers: segmenting actors.
        gpus_per_worker: GPUs per actor (0: the actors run on the CPU).
        cpus: CPUs Ray may use on this machine (None: all).
        mm_per_pixel: the pixel size of images the manifest gives none for.
        rules: the quality rules (:func:`~iternet_monai.biomarkers.parse_rules`); None: the defaults.
        mode: the inferer's mode.
        tta: flip averaging.
        backend: ``auto``, ``pytorch`` or ``onnxruntime`` (on a CPU).
        max_pixels: photographs of more pixels fail.
    """

    source: str
    output: str
    ckpt: str | None = None
    shard: str | None = None
    gather: bool = False
    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus: int | None = None
    mm_per_pixel: float | None = None
    rules: Mapping | None = None
    mode: str = "auto"
    tta: bool = False
    backend: str = "auto"
    max_pixels: int = 16777216


def _settings(options: CohortOptions) -> CohortSettings:
    ckpt = options.ckpt or bundle_weights(BUNDLE_DIR)
    if ckpt is None or not Path(ckpt).is_file():
        raise InputError(f"--ckpt {ckpt}: no such weights file; give a trained model.pt")
    rules = tuple(
        (name, tuple(dataclasses.asdict(rule).items())) for name, rule in sorted((options.rules or {}).items())
    )
    device = "cuda" if options.gpus_per_worker > 0 else "cpu"
    return CohortSettings(
        str(options.output), str(ckpt), device, options.mode, options.tta, options.backend, options.max_pixels, rules
    )


def local_rows(items: Sequence[CohortItem], settings: CohortSettings, output_settings: dict) -> Iterator[dict]:
    """Each image's finished row, one image after another in this process (a ``--shard``): the same stages as on
    Ray, the network built once, when the first image needs it."""
    folder, transform, segmenter = CohortFolder(settings.output_dir), preprocessing(settings.max_pixels), None
    for item in items:
        row = prepare(item, output_settings, transform, folder)
        if row["status"] == "todo":
            segmenter = segmenter or Segmenter(settings)
            row = segmenter(row)
        yield finish(row, item, settings, folder)


def _summary(counts: CohortCounts, output: str) -> str:
    verdicts = ", ".join(f"{n} {verdict}" for verdict, n in counts.verdicts.items())
    missing = f", {counts.missing} not run yet" if counts.missing else ""
    written = ", ".join([*counts.written, "report.html"])
    done = f"{counts.measured} images measured ({verdicts}), {counts.failed} failed{missing}"
    return f"cohort: {done}; wrote {output}/{written}"


def _finish_tables(items, folder: CohortFolder, options: CohortOptions) -> CohortCounts:
    from iternet_monai.cohort.report import write_report

    sizes = [item.mm_per_pixel for item in items if item.mm_per_pixel is not None]
    counts = gather(items, folder, options.mm_per_pixel or (sizes[0] if sizes else None), options.rules)
    write_report(items, folder, counts)
    print(_summary(counts, options.output))
    return counts


def run_cohort(options: CohortOptions) -> int:
    """Run the command; returns 0 when every image was measured, 1 when some failed (each named in
    ``failures.csv`` and on stderr) or, after ``--gather``, some have not run yet.

    Args:
        options: the command's options.
    """
    items = cohort_items(options.source, options.mm_per_pixel)
    check_writable_folder(options.output, "--output")
    folder = CohortFolder(options.output)
    if options.gather:
        counts = _finish_tables(items, folder, options)
        return 1 if counts.failed or counts.missing else 0
    folder.remove_leftovers()
    settings = _settings(options)
    weights_sha256 = file_sha256(settings.ckpt_path)
    chosen = shard_of(items, options.shard) if options.shard else items
    progress, connected = Progress(len(chosen)).start(), False
    try:
        if options.shard:
            rows = local_rows(chosen, settings, settings.output_settings(weights_sha256))
        else:
            from iternet_monai.cohort.ray_run import connect, ray_rows

            connected = connect(options.address, options.cpus)
            rows = ray_rows(chosen, settings, weights_sha256, options.workers, options.gpus_per_worker)
        failed = _count(rows, progress)
    finally:
        progress.stop()
        if connected:
            from iternet_monai.cohort.ray_run import disconnect

            disconnect()
    if not options.shard:
        _finish_tables(items, folder, options)
    return 1 if failed else 0


def _count(rows: Iterator[dict[str, Any]], progress: Progress) -> int:
    """Count the rows as they come, print each failure's reason; returns how many failed."""
    failed = 0
    for row in rows:
        progress.update(row["status"])
        if row["status"] == "failed":
            failed += 1
            print_problem(f"{row['id']}: {row['reason']}", COMMAND_PREFIX)
    return failed
