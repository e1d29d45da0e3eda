"""The MONAI Label helpers that need no MONAI Label (the server itself is tested by ``tox -e monailabel``)."""

import numpy as np
import pytest
from conftest import fundus_like, write_image
from PIL import Image

from iternet_monai.cli import main as cli
from iternet_monai.monailabel import server_command


def test_convert_studies_turns_gif_ppm_tiff_into_png_and_keeps_existing(tmp_path, capsys):
    image, _ = fundus_like()
    for name in ("a.gif", "b.ppm", "c.tif", "d.png", "e.jpg"):
        write_image(tmp_path / "raw" / name, image)
    (tmp_path / "raw" / "notes.txt").write_text("not a study")
    assert cli(["convert-studies", str(tmp_path / "raw"), str(tmp_path / "studies")]) == 0
    names = sorted(p.name for p in (tmp_path / "studies").iterdir())
    assert names == ["a.png", "b.png", "c.png", "d.png", "e.jpg"]
    converted = Image.open(tmp_path / "studies" / "b.png")
    assert converted.mode == "RGB" and np.array_equal(np.asarray(converted), image)
    assert cli(["convert-studies", str(tmp_path / "raw"), str(tmp_path / "studies")]) == 2
    assert "a.png exists" in capsys.readouterr().err


def test_label_app_refuses_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    assert cli(["label-app", "--app-dir", str(tmp_path), "--bundle", str(tmp_path)]) == 2
    assert "is not a bundle folder" in capsys.readouterr().err


def test_server_command_is_offline_and_local():
    command = server_command("apps/monaibundle", "studies", 8123)
    joined = " ".join(command)
    assert "--conf zoo_source ngc" in joined and "--conf sam2 false" in joined
    assert command[command.index("--host") + 1] == "127.0.0.1" and command[-1] == "8123"


@pytest.mark.parametrize("missing", ["/no/such/folder"])
def test_convert_studies_names_a_missing_folder(tmp_path, capsys, missing):
    assert cli(["convert-studies", missing, str(tmp_path)]) == 2
    assert missing in capsys.readouterr().err
