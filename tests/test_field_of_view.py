"""The datasets as loaded (the authors' pixel totals) and the field of view derived from a photograph."""

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image


def test_repo_root_symlinks_point_at_configs():
    for name in ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "metadata.json"):
        link = REPO / "bundles" / "iternet" / name
        assert link.resolve() == (REPO / "bundles" / "iternet" / "configs" / name).resolve()


def pixel_totals(items, size):
    """(FoV pixels, round-trip ground-truth positives inside the FoV, all of them) over a datalist's items."""
    from monai.transforms import Compose

    from iternet_monai.transforms import FieldOfViewd, GroundTruthRoundTripd, fundus_loading

    load, round_trip = Compose(fundus_loading() + [FieldOfViewd("mask")]), GroundTruthRoundTripd("label", size)
    fov_total = inside = everywhere = 0
    for item in items:
        data = load(item)
        fov = data["mask"][0].numpy() > 0.5
        label = round_trip(data)["label"][0].numpy() > 0.5
        fov_total, inside, everywhere = fov_total + fov.sum(), inside + (label & fov).sum(), everywhere + label.sum()
    return int(fov_total), int(inside), int(everywhere)


def test_drive_pipeline_reproduces_the_authors_pixel_totals(drive):
    """The released code's stored DRIVE run counts 4,538,143 FoV pixels and 572,263 ground-truth positives (spec
    4.1): the official masks and the 576^2 round trip here give exactly those."""
    from iternet_monai.data import builtin_datalist, load_datalist

    items = load_datalist(builtin_datalist("drive"), drive, "testing")
    fov_total, positives, _ = pixel_totals(items, 576)
    assert (fov_total, positives) == (4_538_143, 572_263)


@pytest.mark.slow
def test_chase_test_split_matches_the_authors_ground_truth_count(chase):
    """483,038 ground-truth positives in the author's CHASE_DB1 run identify its 8 test images: the last 8 give
    483,106 (0.01% off; the FoV masks were the author's own and are unknown)."""
    from iternet_monai.data import builtin_datalist, load_datalist

    items = load_datalist(builtin_datalist("chase_db1"), chase, "testing")
    _, _, positives = pixel_totals(items, 960)
    assert abs(positives - 483_038) / 483_038 < 1e-3


def derived_fov_errors(pairs):
    """Per image: (pixels where the derived FoV and the reference mask differ, all pixels, derived components)."""
    from scipy import ndimage

    from iternet_monai.data import derive_field_of_view

    rows = []
    for image, mask in pairs:
        photo = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
        reference = np.asarray(Image.open(mask).convert("L")) > 127
        derived, how = derive_field_of_view(photo)
        assert how.startswith("derived: distance from the surround's colour")
        rows.append(((derived != reference).sum(), reference.size, ndimage.label(derived)[1]))
    return np.array(rows)


@pytest.mark.slow
def test_derived_fov_matches_the_official_drive_masks(drive):
    """All 40 DRIVE images: within 0.5% of the official masks pooled, under 1% in every image, one region each."""
    pairs = [
        (image, drive / split / "mask" / f"{image.name[: -len('.tif')]}_mask.gif")
        for split in ("training", "test")
        for image in sorted((drive / split / "images").glob("*.tif"))
    ]
    assert len(pairs) == 40
    errors = derived_fov_errors(pairs)
    assert errors[:, 0].sum() / errors[:, 1].sum() < 0.005
    assert (errors[:, 0] / errors[:, 1]).max() < 0.01
    assert (errors[:, 2] == 1).all()


@pytest.mark.slow
def test_derived_fov_against_the_oliveira_chase_masks(chase):
    """CHASE_DB1 has no official masks; Oliveira et al.'s third-party masks are drawn a few pixels inside the
    visible disc on some images (Image_10L, 13L, 13R), so agreement is looser than on DRIVE (docs/evaluation.md)."""
    oliveira = chase.parent / "CHASE_DB1_FOV_oliveira2018"
    if not oliveira.is_dir():
        pytest.skip(f"{oliveira} not found")
    pairs = [
        (image, oliveira / f"mask_{image.stem[len('Image_') :]}.png") for image in sorted(chase.glob("Image_*.jpg"))
    ]
    assert len(pairs) == 28
    errors = derived_fov_errors(pairs)
    assert errors[:, 0].sum() / errors[:, 1].sum() < 0.015
    assert (errors[:, 0] / errors[:, 1]).max() < 0.04
    assert (errors[:, 2] == 1).all()


def dark_fundus_photo(seed, height=360, width=400):
    """A synthetic fundus photograph (uint8 RGB) and its true disc: a reddish disc darkening towards its rim
    (vignetting) with dark vessels, on a dark (11-16 of 255), noisy, uneven (gradient) background, JPEG-compressed
    at low quality (8x8 blocks)."""
    import io

    rng = np.random.default_rng(seed)
    background, noise, gradient = rng.uniform(11, 16) / 255, rng.uniform(3, 8) / 255, rng.uniform(0, 20) / 255
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    cy, cx = height / 2 + rng.uniform(-10, 10), width / 2 + rng.uniform(-10, 10)
    dist = np.hypot(yy - cy, xx - cx) / (0.46 * min(height, width))
    disc = dist <= 1
    fundus = (
        np.array([0.75, 0.38, 0.18], np.float32)
        * (1 - (1 - rng.uniform(0.25, 0.5)) * np.clip(dist, 0, 1) ** 2)[..., None]
    )
    fundus[(np.abs(np.sin(6 * np.arctan2(yy - cy, xx - cx) + 3 * dist)) < 0.08) & (dist < 0.95)] *= 0.6
    surround = background + gradient * ((xx / width - 0.5) + (yy / height - 0.5))
    photo = np.where(disc[..., None], fundus, surround[..., None]) + rng.normal(0, noise, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(photo * 255, 0, 255).astype(np.uint8)).save(
        buffer, format="JPEG", quality=int(rng.integers(20, 60))
    )
    return np.asarray(Image.open(buffer).convert("RGB")), disc


def third_camera_photo(surround, halo=0.0, seed=0, height=605, width=700):
    """A synthetic 700x605 photograph (uint8 RGB, as STARE's) and its true disc: a vignetted reddish disc with dark
    vessels, cut at the top and bottom, on a surround of colour ``surround`` (0-255, with a 10% gradient and
    noise), with a soft halo ring: outside the disc the surround starts ``halo`` of the way to the rim's colour and
    fades to it over 12 pixels. JPEG quality 75."""
    import io

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    cy, cx = height / 2 + rng.uniform(-8, 8), width / 2 + rng.uniform(-8, 8)
    radius = 0.45 * width
    dist = np.hypot(yy - cy, xx - cx) / radius
    disc, colour, rim = dist <= 1, np.array([0.78, 0.4, 0.2], np.float32), rng.uniform(0.5, 0.7)
    fundus = colour * (1 - (1 - rim) * np.clip(dist, 0, 1) ** 2)[..., None]
    fundus[(np.abs(np.sin(6 * np.arctan2(yy - cy, xx - cx) + 3 * dist)) < 0.08) & (dist < 0.95)] *= 0.6
    gradient = 1 + 0.1 * ((xx / width - 0.5) + (yy / height - 0.5))
    background = np.asarray(surround, np.float32) / 255 * gradient[..., None]
    glow = halo * np.clip(1 - (dist - 1) * radius / 12, 0, 1)[..., None]
    outside = background + glow * (colour * rim - background)
    photo = np.where(disc[..., None], fundus, outside) + rng.normal(0, 3 / 255, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(photo * 255, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=75)
    return np.asarray(Image.open(buffer).convert("RGB")), disc


@pytest.mark.parametrize(
    "surround, halo",
    [((40, 75, 50), 0.0), ((40, 75, 50), 0.4), ((70, 70, 70), 0.0), ((70, 70, 70), 0.4), ((8, 8, 8), 0.4)],
    ids=["dark green", "dark green with halo", "grey", "grey with halo", "black with halo"],
)
def test_derived_fov_follows_the_edge_whatever_the_surround(surround, halo):
    """A dark-green or grey surround is a surround (not a fundus filling the image), and a soft halo ring around
    the retina stays outside: the FoV ends where the brightness falls."""
    from scipy import ndimage

    from iternet_monai.data import derive_field_of_view

    for seed in range(2):
        photo, disc = third_camera_photo(surround, halo, seed)
        fov, how = derive_field_of_view(photo.transpose(2, 0, 1) / 255.0)
        ring = (ndimage.distance_transform_edt(~disc) <= 12) & ~disc
        assert ndimage.label(fov)[1] == 1 and (fov != disc).mean() < 0.01, (seed, (fov != disc).mean(), how)
        assert (fov & ring).sum() < 0.25 * ring.sum(), seed  # at most a few pixels of the 12-pixel ring


def test_a_crop_inside_the_fundus_is_all_field_of_view(drive):
    """Corners as bright as the centre are no surround: a 300x300 crop from the middle of each DRIVE test
    photograph, optic disc and vessels included, is its own FoV."""
    from iternet_monai.data import derive_field_of_view

    for image in sorted((drive / "test" / "images").glob("*.tif")):
        photo = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
        fov, how = derive_field_of_view(photo[:, 142:442, 132:432])
        assert fov.all() and how.startswith("derived: whole image"), image.name


def test_derived_fov_on_dark_noisy_uneven_backgrounds():
    from scipy import ndimage

    from iternet_monai.transforms import FieldOfViewd

    for seed in range(12):
        photo, disc = dark_fundus_photo(seed)
        image = torch.as_tensor(photo.transpose(2, 1, 0) / 255.0, dtype=torch.float32)  # MONAI's (C, W, H)
        fov = FieldOfViewd()({"image": image})["mask"][0].numpy().T > 0.5
        naive = ndimage.binary_fill_holes(photo.mean(2) / 255 > 0.05)  # the former fixed threshold
        assert ndimage.label(naive)[1] > 1 and (naive != disc).mean() > 0.1, seed  # the case is hard
        assert ndimage.label(fov)[1] == 1 and (fov != disc).mean() < 0.015, seed
    uniform = torch.full((3, 40, 30), 0.4)  # no dark surround: a crop inside the fundus
    assert FieldOfViewd()({"image": uniform})["mask"].all()
