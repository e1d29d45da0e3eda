"""The MONAI Label helpers that need no MONAI Label (the server itself is tested by ``tox -e monailabel``)."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import fundus_like, write_image
from PIL import Image

from iternet_monai.apps.monailabel.server import DATASTORE_SUFFIXES, server_command
from iternet_monai.cli import main as cli
from iternet_monai.transforms import RequirePhotod
from iternet_monai.utils.errors import InputError


def test_convert_studies_gives_every_photo_a_listed_unique_name_and_keeps_existing(tmp_path, capsys):
    image, _ = fundus_like()
    for name in ("a.gif", "b.ppm", "c.tif", "d.png", "e.jpg", "f.jpeg", "scan.png", "scan.tif"):
        write_image(tmp_path / "raw" / name, image)
    (tmp_path / "raw" / "notes.txt").write_text("not a study")
    assert cli(["convert-studies", str(tmp_path / "raw"), str(tmp_path / "studies")]) == 0
    names = sorted(p.name for p in (tmp_path / "studies").iterdir())
    assert names == ["a.png", "b.png", "c.png", "d.png", "e.jpg", "f.jpg", "scan_png.png", "scan_tif.png"]
    assert all(name.endswith(DATASTORE_SUFFIXES) for name in names)
    converted = Image.open(tmp_path / "studies" / "b.png")
    assert converted.mode == "RGB" and np.array_equal(np.asarray(converted), image)
    assert (tmp_path / "studies" / "f.jpg").read_bytes() == (tmp_path / "raw" / "f.jpeg").read_bytes()
    (tmp_path / "studies" / "a.png").unlink()
    assert cli(["convert-studies", str(tmp_path / "raw"), str(tmp_path / "studies")]) == 2
    assert "7 file(s) exist" in capsys.readouterr().err
    assert not (tmp_path / "studies" / "a.png").exists()  # nothing written when it refuses


def test_require_photo_refuses_with_the_status_a_client_can_act_on(tmp_path):
    """Without FastAPI (this environment) the refusals are InputErrors; the status is asserted over HTTP in
    ``tox -e monailabel``. Messages name the file, or say "the uploaded file" for MONAI Label's temporary copy."""
    image, _ = fundus_like()
    write_image(tmp_path / "photo.png", image)
    write_image(tmp_path / "redfree.png", image[..., 1])
    Image.new("RGB", (3000, 2000)).save(tmp_path / "large.png")
    require = RequirePhotod(max_pixels=2000 * 2000)
    assert require({"image": str(tmp_path / "photo.png")})["image"] == str(tmp_path / "photo.png")
    with pytest.raises(InputError, match=r"^the requested image is not in the datastore$"):
        require({"image": ""})
    with pytest.raises(InputError, match=r"^large.png is 3000x2000 pixels, more than the limit of 4,000,000"):
        require({"image": str(tmp_path / "large.png")})
    with pytest.raises(InputError, match=r"^redfree.png: grayscale image"):
        require({"image": str(tmp_path / "redfree.png")})
    upload = Path(tempfile.gettempdir()) / "tmpiternettest.png"
    upload.write_bytes(b"not an image")
    try:
        with pytest.raises(InputError, match=r"^the uploaded file is not a readable image"):
            require({"image": str(upload)})
    finally:
        upload.unlink()


def test_label_app_refuses_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    assert cli(["label-app", "--app-dir", str(tmp_path), "--bundle", str(tmp_path)]) == 2
    assert "is not a bundle folder" in capsys.readouterr().err


def test_server_command_serves_the_app_on_this_machine_only():
    command = server_command("apps/iternet", "studies", 8123)
    assert command[command.index("--app") + 1] == "apps/iternet"
    assert command[command.index("--host") + 1] == "127.0.0.1" and command[-1] == "8123"


def test_label_app_writes_the_app_and_refuses_to_replace_an_installed_bundle(tmp_path, capsys):
    from conftest import REPO

    bundle = REPO / "bundles" / "iternet"
    assert cli(["label-app", "--app-dir", str(tmp_path / "app"), "--bundle", str(bundle), "--studies", "s"]) == 0
    printed = capsys.readouterr().out
    assert " ".join(server_command(tmp_path / "app", "s", 8000)) in printed
    assert "iternet_monai.apps.monailabel.app import IterNetApp" in (tmp_path / "app" / "main.py").read_text()
    installed = tmp_path / "app" / "model" / "iternet"
    assert (installed / "configs" / "inference.json").is_file() and (installed / "models").is_dir()
    (installed / "models" / "model.pt").write_bytes(b"fine-tuned weights")
    assert cli(["label-app", "--app-dir", str(tmp_path / "app"), "--bundle", str(bundle)]) == 2
    assert "exists; remove it" in capsys.readouterr().err
    assert (installed / "models" / "model.pt").read_bytes() == b"fine-tuned weights"


@pytest.mark.parametrize("missing", ["/no/such/folder"])
def test_convert_studies_names_a_missing_folder(tmp_path, capsys, missing):
    assert cli(["convert-studies", missing, str(tmp_path)]) == 2
    assert missing in capsys.readouterr().err
