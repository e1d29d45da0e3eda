"""The inferers: MONAI's sliding window with batched stitching, the whole-image inferer, flip averaging, and their
progress bars."""

import pytest
import torch
from inference_helpers import SlowNetwork
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer

from iternet_monai.inferers.inferer import (
    PAPER_OVERLAP,
    BatchedSlidingWindowInferer,
    FlipAveragingInferer,
    WholeImageInferer,
    make_inferer,
    resolve_mode,
    sliding_window_count,
)
from iternet_monai.networks import IterNet


def test_window_count_of_the_paper_stride():
    assert sliding_window_count(584, 565) == 22_491


def test_auto_mode_is_sliding_window_on_cuda_and_whole_image_on_cpu():
    assert resolve_mode("auto", "cuda:0") == "sliding_window"
    assert resolve_mode("auto", "cpu") == "whole_image"
    assert resolve_mode("sliding_window", "cpu") == "sliding_window"
    with pytest.raises(ValueError, match="unknown inference mode 'fast'"):
        make_inferer("fast")


def test_whole_image_and_windowed_paths_agree_for_a_position_independent_network():
    torch.manual_seed(0)
    pointwise = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1)).eval()
    image = torch.rand(1, 3, 150, 203)
    with torch.no_grad():
        whole = WholeImageInferer()(image, pointwise)
        windowed = SlidingWindowInferer((64, 64), 8, overlap=0.5, mode="constant")(image, pointwise)
        tiled = WholeImageInferer(max_pixels=100 * 100, tile=64)(image, pointwise)
    assert whole.shape == (1, 1, 150, 203)
    assert torch.allclose(whole, windowed, atol=1e-5) and torch.allclose(whole, tiled, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "sw_batch_size"),
    [
        ((1, 3, 200, 170), (64, 64), 0.5, 7),  # the last row and column of windows moved to the edge
        ((2, 3, 131, 140), (128, 128), PAPER_OVERLAP, 64),  # two images; the paper's stride 3
        ((1, 3, 128, 300), (128, 96), 0.25, 3),  # the window as tall as the image; not square
        ((1, 3, 96, 96), (32, 32), 0.5, 1000),  # a regular grid; every window in one batch
    ],
)
def test_batched_sliding_window_gives_monais_result(shape, roi, overlap, sw_batch_size):
    torch.manual_seed(0)
    net = torch.nn.Sequential(IterNet(features=4), torch.nn.Conv2d(1, 2, 1)).eval()  # two position-aware channels
    image = MetaTensor(torch.rand(shape), affine=torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0])))
    with torch.no_grad():
        monai = SlidingWindowInferer(roi, sw_batch_size, overlap, mode="constant")(image, net)
        ours = BatchedSlidingWindowInferer(roi, sw_batch_size, overlap, mode="constant")(image, net)
    assert ours.shape == monai.shape == (shape[0], 2, *shape[2:])
    assert torch.allclose(ours, monai, atol=1e-6, rtol=0)
    assert isinstance(ours, MetaTensor) and torch.equal(ours.affine, monai.affine)


def test_batched_sliding_window_hands_what_it_does_not_cover_to_monai():
    torch.manual_seed(0)
    net = IterNet(features=4).eval()
    image = torch.rand(1, 3, 70, 90)
    for options, data, network in (
        ({"mode": "gaussian"}, image, net),
        ({}, image[..., :40, :], net),  # smaller than the window: MONAI pads it
        ({}, image, lambda x: {"vessel": net(x)}),  # a network that returns a dictionary
    ):
        settings = {"roi_size": (64, 64), "sw_batch_size": 4, "overlap": 0.5, **options}
        torch.manual_seed(1)
        with torch.no_grad():
            monai = SlidingWindowInferer(**settings)(data, network)
            torch.manual_seed(1)
            ours = BatchedSlidingWindowInferer(**settings)(data, network)
        if isinstance(monai, dict):
            assert ours.keys() == monai.keys() and torch.equal(ours["vessel"], monai["vessel"])
        else:
            assert torch.equal(ours, monai)


def test_batched_sliding_window_works_per_row_of_windows_not_per_window():
    """MONAI runs about 26 tensor operations per window (22,491 windows per DRIVE image at stride 3), the batched
    stitching a few per row of windows."""
    image = torch.rand(1, 3, 60, 60)
    windows = sliding_window_count(60, 60, roi=8, overlap=1 - 1 / 8)
    counts = {}
    for inferer in (SlidingWindowInferer, BatchedSlidingWindowInferer):
        with torch.no_grad(), torch.profiler.profile() as profile:
            inferer((8, 8), 512, 1 - 1 / 8, mode="constant")(image, lambda x: x[:, :1] * 2)
        counts[inferer] = sum(event.count for event in profile.key_averages())
    assert windows == 53 * 53 and counts[SlidingWindowInferer] > 10 * windows
    assert counts[BatchedSlidingWindowInferer] < windows / 5


def test_make_inferer_stitching_choices():
    assert type(make_inferer("sliding_window")) is BatchedSlidingWindowInferer
    assert type(make_inferer("sliding_window", stitching="monai", buffer_steps=2)) is SlidingWindowInferer
    with pytest.raises(ValueError, match="buffer_steps is an option of MONAI's stitching"):
        make_inferer("sliding_window", buffer_steps=2)
    with pytest.raises(ValueError, match="unknown stitching 'fast'"):
        make_inferer("sliding_window", stitching="fast")


def test_whole_image_pads_to_16_and_crops_back_and_channels_last_changes_nothing():
    net = IterNet(features=4).eval()
    image = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        out = WholeImageInferer()(image, net)
        plain = net(torch.nn.functional.pad(image, (0, 14, 0, 11)))[..., :37, :50]
    assert out.shape == (1, 1, 37, 50)
    assert torch.allclose(out, plain, atol=1e-5)


def test_flip_averaging_is_the_mean_of_the_four_flipped_passes():
    torch.manual_seed(0)
    net = IterNet(features=4).eval()
    image = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        tta = make_inferer("whole_image", "cpu", tta=True)(image, net)
        passes = [
            net(image),
            net(image.flip(3)).flip(3),
            net(image.flip(2)).flip(2),
            net(image.flip(2).flip(3)).flip(3).flip(2),
        ]
    assert isinstance(make_inferer("whole_image", "cpu", tta=True), FlipAveragingInferer)
    assert torch.allclose(tta, torch.stack(passes).mean(0), atol=1e-6)
    assert not torch.allclose(tta, passes[0], atol=1e-4)  # IterNet is not flip-invariant: averaging changes it


def test_sliding_window_progress_counts_the_windows(capsys):
    """A 200x200 image in 128x128 windows at stride 64: 3 rows of 3 windows, one row per network call."""
    network = SlowNetwork(capsys, seconds=0.15)
    inferer = BatchedSlidingWindowInferer((128, 128), sw_batch_size=3, overlap=0.5, mode="constant", progress=True)
    inferer(torch.rand(1, 3, 200, 200), network)
    assert ["0/9" in network.seen[0], "3/9" in network.seen[1], "6/9" in network.seen[2]] == [True] * 3, network.seen


def test_a_photograph_too_large_for_one_pass_shows_its_tiles_as_they_are_done(capsys):
    network = SlowNetwork(capsys, seconds=0.15)
    inferer = WholeImageInferer(max_pixels=32 * 32, tile=32, progress=True)  # 64x64: 3x3 tiles of 32 at stride 28
    inferer(torch.rand(1, 3, 64, 64), network)
    assert "0/9" in network.seen[0] and "4/9" in network.seen[4], network.seen
