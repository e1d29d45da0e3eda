"""Vessel biomarkers on shapes drawn here with known answers, and on the DRIVE ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy.integrate import quad
from scipy.spatial import cKDTree
from skimage.draw import line

from iternet_monai.biomarkers.measures import IMAGE_COLUMNS, SEGMENT_COLUMNS, box_counting_dimension, measure_vessels


def bar(length: float, width: float, angle: float, shape=(300, 300)) -> np.ndarray:
    """Pixels whose centres lie in a length x width rectangle at ``angle`` (radians from the row axis), centred off
    the pixel grid."""
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(float)
    centre = np.array(shape) / 2 + (0.37, 0.21)
    direction = np.array([np.sin(angle), np.cos(angle)])
    along = (rows - centre[0]) * direction[0] + (cols - centre[1]) * direction[1]
    across = -(rows - centre[0]) * direction[1] + (cols - centre[1]) * direction[0]
    return (np.abs(across) < width / 2) & (np.abs(along) < length / 2)


def arc(radius: float, width: float, angle: float, shape=(200, 200)) -> np.ndarray:
    """An annulus sector: centreline radius ``radius``, ``angle`` radians long, ends cut radially."""
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(float)
    centre = np.array(shape) / 2 + (0.3, 0.1)
    distance = np.hypot(rows - centre[0], cols - centre[1])
    polar = np.mod(np.arctan2(rows - centre[0], cols - centre[1]) - 0.3, 2 * np.pi)
    return (np.abs(distance - radius) <= width / 2) & (polar <= angle)


def thick_lines(segments, width: int, shape=(200, 200)) -> np.ndarray:
    """Lines between (row, col) end points, thickened to ``width`` by the distance transform (rounded ends)."""
    image = np.zeros(shape, bool)
    for r0, c0, r1, c1 in segments:
        image[line(r0, c0, r1, c1)] = True
    return image if width == 1 else ndimage.distance_transform_edt(~image) < width / 2


def only_segment(image: np.ndarray) -> dict:
    measures = measure_vessels(image)
    assert len(measures.segments) == 1, [s["kind"] for s in measures.segments]
    return measures.segments[0]


@pytest.mark.parametrize("width", [1, 3, 6])
@pytest.mark.parametrize("angle", [0.0, 0.3, np.pi / 4, 1.2])
def test_straight_bar_length_tortuosity_and_calibre(width, angle):
    segment = only_segment(bar(240, width, angle))
    assert segment["length_px"] == pytest.approx(240, rel=0.01)
    assert round(segment["tortuosity"], 2) == 1.00
    assert segment["calibre_px"] == pytest.approx(width, abs=0.5)
    assert segment["kind"] == "end-end"


@pytest.mark.parametrize("radius", [25, 40, 80])
@pytest.mark.parametrize("width", [1, 3, 5])
@pytest.mark.parametrize("angle", [np.pi / 2, np.pi, 1.5 * np.pi])
def test_circular_arc_length_and_tortuosity(radius, width, angle):
    """Radius 25 px and up: below, a thick arc's end pixels alone move the chord by a pixel (docs/biomarkers.md)."""
    segment = only_segment(arc(radius, width, angle))
    assert segment["length_px"] == pytest.approx(radius * angle, rel=0.02)
    assert segment["tortuosity"] == pytest.approx(angle / (2 * np.sin(angle / 2)), rel=0.03)
    assert segment["calibre_px"] == pytest.approx(width, abs=0.5)


def test_pixel_steps_would_overestimate_the_circle():
    """The estimator must beat what skan's pixel steps give on a circle (about +5 %), or the test above is moot."""
    from skan import Skeleton
    from skimage.morphology import skeletonize

    image = arc(80, 1, np.pi)
    steps = Skeleton(skeletonize(image, method="lee")).path_lengths().sum()
    assert steps / (80 * np.pi) > 1.03
    assert abs(only_segment(image)["length_px"] / (80 * np.pi) - 1) < 0.01


@pytest.mark.parametrize("width", [1, 3, 5])
def test_sinusoid_arc_length_from_the_integral(width):
    amplitude, wavelength, start, stop = 20.0, 150.0, 50.0, 350.0
    k = 2 * np.pi / wavelength
    x = np.arange(start, stop, 0.02)
    curve = np.c_[100 + amplitude * np.sin(k * x), x]
    rows, cols = np.mgrid[:200, :400]
    distance, _ = cKDTree(curve).query(np.c_[rows.ravel(), cols.ravel()])
    image = distance.reshape(rows.shape) < width / 2
    arc_length = quad(lambda t: np.sqrt(1 + (amplitude * k * np.cos(k * t)) ** 2), start, stop)[0]
    segment = only_segment(image)
    # the drawn vessel has round caps of radius width/2 at both ends
    assert segment["length_px"] == pytest.approx(arc_length + width, rel=0.02)
    assert segment["calibre_px"] == pytest.approx(width, abs=0.5)


@pytest.mark.parametrize("width", [1, 3, 7])
@pytest.mark.parametrize(
    "lines, branch_points, end_points",
    [
        ([(100, 20, 100, 180), (100, 100, 20, 100)], 1, 3),  # T
        ([(180, 100, 100, 100), (100, 100, 30, 40), (100, 100, 30, 160)], 1, 3),  # Y
        ([(100, 20, 100, 180), (20, 100, 180, 100)], 1, 4),  # X
        ([(100, 20, 100, 180), (100, 60, 30, 60), (100, 140, 170, 140)], 2, 4),  # two branches
    ],
)
def test_junction_counts(width, lines, branch_points, end_points):
    image = measure_vessels(thick_lines(lines, width)).image
    assert (image["branch_points"], image["end_points"]) == (branch_points, end_points)
    assert image["segments"] == branch_points + end_points - 1  # a tree: edges = nodes - 1
    assert image["components"] == 1


def carpet(level: int) -> np.ndarray:
    square = np.ones((1, 1), bool)
    for _ in range(level):
        hole = np.zeros_like(square)
        square = np.block([[square, square, square], [square, hole, square], [square, square, square]])
    return square


def test_fractal_dimension_of_square_line_and_carpet():
    square = np.zeros((512, 512), bool)
    square[16:496, 16:496] = True
    dimension, r2, smallest, largest = box_counting_dimension(square)
    assert dimension == pytest.approx(2.0, abs=0.05) and (smallest, largest) == (2, 64) and r2 > 0.99
    thin = np.zeros((512, 512), bool)
    thin[250, 16:496] = True
    assert box_counting_dimension(thin)[0] == pytest.approx(1.0, abs=0.05)
    assert box_counting_dimension(carpet(6))[0] == pytest.approx(np.log(8) / np.log(3), abs=0.05)  # 1.893
    assert np.isnan(box_counting_dimension(np.zeros((64, 64), bool))[0])
    row = measure_vessels(thin).image
    assert row["fractal_dimension"] == pytest.approx(1.0, abs=0.05)
    assert (row["fractal_min_box_px"], row["fractal_max_box_px"]) == (2, 64)


def vessel_tree() -> np.ndarray:
    """A vessel with two branch points and a separate curved one."""
    tree = thick_lines([(20, 30, 120, 100), (120, 100, 190, 60), (120, 100, 170, 190), (60, 58, 30, 150)], 5)
    return tree | np.roll(arc(40, 3, np.pi * 0.8), (-55, 40), axis=(0, 1))


@pytest.mark.parametrize("flip", [np.transpose, np.fliplr, np.flipud, np.rot90])
def test_invariant_to_transposing_and_flipping(flip):
    original = measure_vessels(vessel_tree()).image
    flipped = measure_vessels(flip(vessel_tree())).image
    for name in ("fov_area_px2", "vessel_area_px2", "vessel_area_density", "components", "branch_points", "end_points"):
        assert flipped[name] == original[name], name
    for name in ("total_length_px", "tortuosity_weighted", "calibre_weighted_px"):
        assert flipped[name] == pytest.approx(original[name], rel=0.01), name
    assert flipped["fractal_dimension"] == pytest.approx(original["fractal_dimension"], abs=0.02)


def test_millimetres():
    pixels = measure_vessels(bar(240, 3, 0.3))
    mm = measure_vessels(bar(240, 3, 0.3), mm_per_pixel=0.0125)
    assert mm.segments[0]["length_mm"] == pytest.approx(3.0, rel=0.01)  # 240 px of 12.5 um
    assert mm.segments[0]["calibre_mm"] == pytest.approx(3 * 0.0125, abs=0.5 * 0.0125)
    image = mm.image
    assert image["vessel_area_mm2"] == pytest.approx(pixels.image["vessel_area_px2"] * 0.0125**2)
    assert image["fov_area_mm2"] == pytest.approx(300 * 300 * 0.0125**2)
    assert image["length_density_per_mm"] == pytest.approx(pixels.image["length_density_per_px"] / 0.0125)
    assert image["total_length_mm"] == pytest.approx(pixels.image["total_length_px"] * 0.0125)
    assert "length_mm" not in pixels.segments[0] and "vessel_area_mm2" not in pixels.image
    assert set(pixels.image) == set(IMAGE_COLUMNS) and set(pixels.segments[0]) == set(SEGMENT_COLUMNS)
    with pytest.raises(ValueError, match="mm_per_pixel"):
        measure_vessels(bar(240, 3, 0.3), mm_per_pixel=0)


def test_fov_limits_the_measurement_and_empty_maps_give_nan():
    image = bar(240, 3, 0.0)
    left = np.zeros_like(image)
    left[:, :150] = True
    half = measure_vessels(image, left).image
    assert half["fov_area_px2"] == left.sum() and half["vessel_area_px2"] == (image & left).sum()
    assert half["total_length_px"] == pytest.approx(measure_vessels(image).image["total_length_px"] / 2, rel=0.03)
    empty = measure_vessels(np.zeros((40, 40), bool)).image
    assert empty["segments"] == 0 and empty["total_length_px"] == 0 and np.isnan(empty["calibre_median_px"])
    with pytest.raises(ValueError, match="FoV"):
        measure_vessels(image, left[:10])


def test_drive_vessel_density_matches_the_known_pixel_counts(drive):
    """577,649 vessel pixels in 4,538,143 FoV pixels over the 20 test images (1st observer, official masks)."""
    vessels = fov = 0
    for number in range(1, 21):
        label = np.asarray(Image.open(drive / "test" / "1st_manual" / f"{number:02d}_manual1.gif")) > 127
        mask = np.asarray(Image.open(drive / "test" / "mask" / f"{number:02d}_test_mask.gif")) > 127
        row = measure_vessels(label, mask).image
        assert row["vessel_area_density"] == row["vessel_area_px2"] / row["fov_area_px2"]
        assert 1.3 < row["fractal_dimension"] < 1.6 and row["segments"] > 100
        vessels, fov = vessels + row["vessel_area_px2"], fov + row["fov_area_px2"]
    assert (vessels, fov) == (577_649, 4_538_143)
