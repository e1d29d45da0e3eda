"""Saved probability maps of any method: read in every format, binary ones said so, returned by the stored-map
inferer."""

import numpy as np
import pytest
import torch
from conftest import write_image
from PIL import Image

from iternet_monai.data.maps import EvaluationError, read_probability_map


def test_probability_map_formats(tmp_path):
    values = np.linspace(0, 1, 12).reshape(3, 4)
    write_image(tmp_path / "a.png", np.round(values * 255).astype(np.uint8))
    Image.fromarray(np.round(values * 65535).astype(np.uint16)).save(tmp_path / "b.png")
    Image.fromarray(values.astype(np.float32)).save(tmp_path / "c.tif")
    import nibabel as nib

    nib.save(nib.Nifti1Image(values.T[:, :, None].astype(np.float32), np.eye(4)), str(tmp_path / "d.nii.gz"))
    for name, tol in (("a.png", 1 / 255), ("b.png", 1 / 65535), ("c.tif", 1e-7), ("d.nii.gz", 1e-7)):
        assert np.abs(read_probability_map(tmp_path / name) - values).max() <= tol, name
    np.save(tmp_path / "e.npy", values * 2)
    with pytest.raises(EvaluationError, match=r"e\.npy: values must lie in \[0, 1\]"):
        read_probability_map(tmp_path / "e.npy")
    write_image(tmp_path / "f.png", np.zeros((3, 4, 3), np.uint8) + np.array([0, 255, 0], np.uint8))
    with pytest.raises(EvaluationError, match="colour image"):
        read_probability_map(tmp_path / "f.png")


def test_stored_map_inferer_returns_each_images_map_and_ignores_the_network(tmp_path):
    from monai.data import MetaTensor

    from iternet_monai.inferers import StoredMapInferer

    rng = np.random.default_rng(0)
    items, expected = [], {}
    (tmp_path / "maps").mkdir()
    for stem in ("a", "b"):
        write_image(tmp_path / f"{stem}.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
        expected[stem] = rng.random((20, 30))
        np.save(tmp_path / "maps" / f"{stem}_prob.npy", expected[stem])
        items.append({"image": str(tmp_path / f"{stem}.png")})
    inferer = StoredMapInferer(items, tmp_path / "maps")
    batch = MetaTensor(torch.zeros(2, 3, 30, 20), meta={"filename_or_obj": [items[1]["image"], items[0]["image"]]})
    out = inferer(batch, network=None)
    assert out.shape == (2, 1, 30, 20) and out.dtype == torch.float32
    for index, stem in enumerate(("b", "a")):
        assert np.allclose(out[index, 0].numpy().T, expected[stem], atol=1e-7)
    assert inferer.description["files"] == {"a": "a_prob.npy", "b": "b_prob.npy"}
    other = MetaTensor(torch.zeros(1, 3, 30, 20), meta={"filename_or_obj": [str(tmp_path / "c.png")]})
    with pytest.raises(EvaluationError, match="c.png: no stored map was checked"):
        inferer(other)
