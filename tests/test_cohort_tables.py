"""The cohort tables and report.html from stored results: memory that does not grow with the images' segments, every
row in every table (read back with the csv module), the flagged images' photograph and overlay thumbnails, and the
report of a real cohort run as headless Chromium draws it."""

from __future__ import annotations

import base64
import csv
import html.parser
import importlib.util
import io
import os
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset, missing, write_image
from PIL import Image

from iternet_monai.biomarkers import IMAGE_COLUMNS, QUALITY_COLUMNS, SEGMENT_COLUMNS, ImageResult
from iternet_monai.cli import main
from iternet_monai.cohort import tables
from iternet_monai.cohort.manifest import CohortItem
from iternet_monai.cohort.report import write_report
from iternet_monai.cohort.store import CohortFolder

N = 25  # images of the smaller cohort; the larger has 2N
SEGMENTS = 200  # per image, as a fundus photograph has 100-200
DARK = "the photograph is dark (mean green {:.2f} of full scale inside the FoV, limit 0.10)"
CHROMIUM = Path("/usr/bin/chromium")
BAR = np.array([0x44, 0xAA, 0x77])  # the histograms' #4a7


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def inline_image(source: str) -> Image.Image:
    """The picture of an ``<img>``'s ``data:`` URI."""
    return Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))


def synthetic_result(image_id: str, rng: np.random.Generator, verdict: str) -> ImageResult:
    """An image's biomarkers, :data:`SEGMENTS` segments and quality, with random values."""
    image = {name: float(rng.uniform(0.1, 10)) for name in IMAGE_COLUMNS}
    segments = [{name: float(rng.uniform(1, 50)) for name in SEGMENT_COLUMNS} for _ in range(SEGMENTS)]
    quality = {name: float(rng.uniform()) for name in QUALITY_COLUMNS}
    quality.update(fov_source="derived from the photograph", quality=verdict, reasons="")
    if verdict != "good":
        quality["reasons"] = DARK.format(quality["exposure"] / 20)
    return ImageResult(image_id, image, segments, quality)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[list[CohortItem], CohortFolder, dict[str, ImageResult]]:
    """2N images stored as a cohort run stores them (tiny 8x8 maps), every 5th flagged; then a failed and a missing
    image. Every 4th flagged image's photograph is missing; the others are small red discs."""
    root = tmp_path_factory.mktemp("cohort_tables")
    folder, rng = CohortFolder(root / "out"), np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    disc = np.where(((yy - 32) ** 2 + (xx - 32) ** 2 < 900)[..., None], [200, 60, 30], 0).astype(np.uint8)
    items, results = [], {}
    for n in range(2 * N):
        item = CohortItem(f"img{n:03d}", str(root / f"img{n:03d}.png"), None, (("eye", "left"),))
        if n % 20 != 5:
            write_image(Path(item.path), disc)
        maps = (rng.uniform(size=(8, 8)).astype(np.float32), rng.uniform(size=(8, 8)) > 0.5, disc[::8, ::8])
        results[item.id] = synthetic_result(item.id, rng, "check" if n % 5 == 0 else "good")
        folder.save_done(item, "key", maps, results[item.id])
        items.append(item)
    failed, missing = CohortItem("bad", "bad.png"), CohortItem("later", "later.png")
    folder.save_failure(failed, "bad.png: is not a readable image")
    return [*items, failed, missing], folder, results


def gather_peak(items: list[CohortItem], folder: CohortFolder) -> int:
    """The peak of Python's allocations (bytes) while :func:`gather` writes the tables of ``items``."""
    tracemalloc.start()
    try:
        tables.gather(items, folder, None)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_gather_memory_does_not_grow_with_the_segments(cohort):
    items, folder, _ = cohort
    tables.gather(items[:N], folder, None)  # matplotlib's and pyarrow's one-off allocations
    growth = (gather_peak(items[: 2 * N], folder) - gather_peak(items[:N], folder)) / N
    # What is kept per image is about 2 kB (its biomarkers for cohort.png and the histograms, a Parquet row), and
    # cohort.png's matplotlib objects add 15-30 kB (a flagged image's name is written in each panel); its 200
    # segments, when held as dicts until every table is written, are over 200 kB.
    assert growth < 60_000, f"gather's peak memory grows by {growth:.0f} bytes per image"


def test_every_row_of_every_table(cohort, monkeypatch):
    items, folder, results = cohort
    monkeypatch.setattr(tables, "PARQUET_BATCH", 7)  # several row groups
    counts = tables.gather(items, folder, None)
    measured = [item.id for item in items if item.id in results]
    assert (counts.measured, counts.failed, counts.missing) == (2 * N, 1, 1)
    biomarkers = rows(folder.root / "biomarkers.csv")
    assert [row["image"] for row in biomarkers] == measured
    for row in biomarkers:
        expected = results[row["image"]].image
        assert np.allclose([float(row[n]) for n in IMAGE_COLUMNS], [expected[n] for n in IMAGE_COLUMNS], rtol=1e-5)
    segments = rows(folder.root / "segments.csv")
    assert [row["image"] for row in segments] == [i for i in measured for _ in range(SEGMENTS)]
    lengths = [s["length_px"] for i in measured for s in results[i].segments]
    assert np.allclose([float(row["length_px"]) for row in segments], lengths, rtol=1e-5)
    quality = rows(folder.root / "quality.csv")
    assert [(r["image"], r["quality"]) for r in quality] == [(i, results[i].quality["quality"]) for i in measured]
    failures = rows(folder.root / "failures.csv")
    assert [(r["id"], r["reason"]) for r in failures] == [
        ("bad", "bad.png: is not a readable image"),
        ("later", "not run yet (a shard that has not run, or a killed run)"),
    ]
    if importlib.util.find_spec("pyarrow") is not None:
        import pyarrow.parquet as pq

        assert pq.ParquetFile(folder.root / "biomarkers.parquet").num_row_groups == -(-2 * N // 7)
        table = pq.read_table(folder.root / "biomarkers.parquet").to_pylist()
        assert [(r["image"], r["eye"]) for r in table] == [(i, "left") for i in measured]
        assert np.allclose([r["calibre_median_px"] for r in table], [float(r["calibre_median_px"]) for r in biomarkers])


class Figures(html.parser.HTMLParser):
    """The report's flagged images: per figure, the ``src`` of each image and the caption's text."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "figure":
            self.figures.append({"images": [], "text": ""})
        elif tag == "img" and self.figures:
            self.figures[-1]["images"].append(dict(attrs)["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self.figures[-1]["done"] = True

    def handle_data(self, data: str) -> None:
        if self.figures and not self.figures[-1].get("done"):
            self.figures[-1]["text"] += data


def test_report_shows_each_flagged_photograph_and_overlay(cohort):
    items, folder, results = cohort
    write_report(items, folder, tables.gather(items, folder, None))
    page = (folder.root / "report.html").read_text()
    parser = Figures()
    parser.feed(page)
    flagged = [item for item in items if item.id in results and results[item.id].quality["quality"] != "good"]
    assert [f["text"].split(":")[0] for f in parser.figures] == [item.id for item in flagged]
    for figure, item in zip(parser.figures, flagged):
        thumbnails = [inline_image(source) for source in figure["images"]]
        assert len(thumbnails) == (2 if Path(item.path).exists() else 1), item.id  # no photograph: the overlay
        assert thumbnails[-1].size == (8, 8)  # the overlay
        if len(thumbnails) == 2:
            photograph = np.asarray(thumbnails[0], np.int32)
            assert thumbnails[0].size == (64, 64) and photograph[32, 32, 0] > photograph[32, 32, 1] + 100
    assert f"<td>{len(flagged)}</td><th>exposure, low</th>" in page  # the reasons, counted by the limit crossed


def chromium() -> Path:
    """Headless Chromium; skips the test when it is absent, except under CI=true where that fails."""
    if not CHROMIUM.is_file():
        missing(f"{CHROMIUM} not found (apt-get install chromium)")
    return CHROMIUM


def screenshot(page: Path, folder: Path) -> np.ndarray:
    """``page`` as headless Chromium draws it in a 1200x3000 window, (H, W, 3) uint8."""
    png, profile = folder / "report.png", folder / "profile"
    command = [str(chromium()), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    command += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    command += [f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1200,3000", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env={**os.environ, "HOME": str(folder)})
    assert png.is_file(), done.stderr[-2000:]
    return np.asarray(Image.open(png).convert("RGB"))


def reddish(pixels: np.ndarray) -> int:
    """How many pixels are fundus-coloured: red clearly above green and blue."""
    r, g, b = np.moveaxis(pixels.astype(np.int32), -1, 0)
    return int(((r > g + 40) & (r > b + 40)).sum())


@pytest.mark.slow
def test_report_in_headless_chromium(tmp_path):
    chromium()  # before the run
    drive, chase = dataset("DRIVE"), dataset("CHASE_DB1")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"id,path\ndrive01,{drive / 'test/images/01_test.tif'}\nchase01L,{chase / 'Image_01L.jpg'}\n")
    output, flag_all = tmp_path / "cohort", ["--qc", "exposure.check_above=0.01"]  # both flagged: thumbnails
    for step in (["--shard", "0/1"], ["--gather"]):
        assert main(["cohort", str(manifest), "--output", str(output), "--backend", "pytorch", *step, *flag_all]) == 0
    page = output / "report.html"
    parser = Figures()
    parser.feed(page.read_text())
    assert [len(f["images"]) for f in parser.figures] == [2, 2]  # photograph and overlay of each
    thumbnails = [inline_image(source) for figure in parser.figures for source in figure["images"]]
    pixels = screenshot(page, tmp_path)
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    assert tuple(colours[counts.argmax()]) == (255, 255, 255), "the page is not white"
    bars = int((np.abs(pixels.astype(np.int32) - BAR).max(-1) <= 12).sum())
    assert bars >= 300, f"{bars} pixels of histogram bars"
    # Each thumbnail drawn at its own size: nearly all of its fundus pixels are on the screen.
    expected = sum(reddish(np.asarray(t.convert("RGB"))) for t in thumbnails)
    assert expected >= 4000 and reddish(pixels) >= 0.9 * expected, (reddish(pixels), expected)


def test_the_cohort_figure_of_images_with_and_without_a_pixel_size(tmp_path):
    """A manifest that gives some images their mm per pixel: the figure is drawn (in mm, the others' values
    missing), not a KeyError on the images without."""
    from iternet_monai.biomarkers.figures import save_cohort_figure
    from iternet_monai.biomarkers.measures import mm_column

    rng = np.random.default_rng(1)
    with_size, without = synthetic_result("a", rng, "check"), synthetic_result("b", rng, "good")
    with_size.image.update({mm_column(n): 1.0 for n, (_, unit, _) in IMAGE_COLUMNS.items() if unit is not None})
    save_cohort_figure(tmp_path / "cohort.png", [with_size, without])
    assert Image.open(tmp_path / "cohort.png").size[0] > 400
