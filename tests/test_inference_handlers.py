"""Batch inference's handlers: the weights loaded once when the evaluator starts, the writers (biomarkers only with
measure), the progress bar; the preprocessing."""

import logging
import shutil

import pytest
import torch
from conftest import fundus_like, write_image
from inference_helpers import SlowNetwork, run_inference, small_fp16_weights

from iternet_monai.engines.checkpoints import CheckpointError
from iternet_monai.engines.inference import load_pipeline
from iternet_monai.handlers import ImageProgress
from iternet_monai.networks import IterNet
from iternet_monai.utils.errors import find_input_error


@pytest.fixture
def small_weights(tmp_path):
    return small_fp16_weights(tmp_path)


def test_an_untrained_network_writes_nothing_unless_asked(tmp_path, caplog):
    image, _ = fundus_like(48, 64)
    write_image(tmp_path / "in" / "a.png", image)
    small = {"network_def#features": 4, "dataset_dir": str(tmp_path / "in"), "output_dir": str(tmp_path / "out")}
    small["ckpt_path"] = "none"  # not the bundle's shipped weights: no weights at all
    with caplog.at_level(logging.WARNING):
        run_inference(**small)
    assert not (tmp_path / "out").exists()
    assert "ran the UNTRAINED network on 1 image(s) to check the pipeline and wrote nothing" in caplog.text
    run_inference(**small, allow_untrained=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_mask.png", "a_overlay.png", "a_prob.png"]


def test_the_network_is_shaped_by_the_weights_and_loaded_when_the_evaluator_starts(small_weights):
    """``network_def`` takes the weights' shape without their values; the weights loader puts the file's values in
    when an engine starts; a missing file is one line naming it."""
    from ignite.engine import Engine

    from iternet_monai.engines.checkpoints import iternet_shaped_for
    from iternet_monai.handlers import WeightsLoader

    weights, _ = small_weights
    saved = torch.load(weights, weights_only=True)
    network = iternet_shaped_for(weights, features=32)
    assert network.head.weight.shape == saved["head.weight"].shape == (1, 4, 1, 1)
    assert not torch.equal(network.head.weight, saved["head.weight"].float())
    engine = Engine(lambda engine, batch: None)
    WeightsLoader(weights, network).attach(engine)
    engine.run([0])
    assert all(torch.equal(network.state_dict()[k], v.float()) for k, v in saved.items())
    untrained = IterNet(features=4)
    before = {k: v.clone() for k, v in untrained.state_dict().items()}
    WeightsLoader("none", untrained).load()
    assert all(torch.equal(untrained.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(CheckpointError, match="no_such.pt: no such checkpoint file"):
        WeightsLoader(weights.parent / "no_such.pt", untrained).load()


def test_a_run_reads_the_weights_once(tmp_path, small_weights, monkeypatch):
    """The network's shape is read from the file's header (memory-mapped); its values are read once."""
    weights, _ = small_weights
    write_image(tmp_path / "in" / "a.png", fundus_like(48, 64)[0])
    reads, real_load = [], torch.load

    def counting_load(f, *args, **kwargs):
        if str(f) == str(weights):
            reads.append(bool(kwargs.get("mmap")))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    run_inference(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), ckpt_path=str(weights))
    assert sorted(reads) == [False, True]
    assert (tmp_path / "out" / "a_mask.png").is_file()


def test_measure_is_whether_the_biomarker_writer_is_among_the_handlers():
    from iternet_monai.handlers import BiomarkerWriter, VesselMapWriter, WeightsLoader

    def handlers(**overrides):
        return [type(h) for h in load_pipeline(**overrides).get_parsed_content("handlers")]

    assert handlers() == [WeightsLoader, VesselMapWriter, ImageProgress]
    assert handlers(measure="true") == [WeightsLoader, VesselMapWriter, BiomarkerWriter, ImageProgress]


def test_measure_turns_photographs_into_the_biomarker_tables_and_refuses_to_replace_them(
    drive, tmp_path, small_weights
):
    weights, _ = small_weights
    shutil.copy(drive / "test" / "images" / "01_test.tif", tmp_path / "01_test.tif")
    out = tmp_path / "out"
    run_inference(dataset_dir=str(tmp_path), output_dir=str(out), ckpt_path=str(weights), measure=True)
    for name in ("biomarkers.csv", "segments.csv", "quality.csv", "columns.json", "cohort.png", "figures/01_test.png"):
        assert (out / name).is_file(), name
    rows = (out / "biomarkers.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("01_test,")
    stamp = (out / "biomarkers.csv").stat().st_mtime_ns
    with pytest.raises(RuntimeError) as raised:
        run_inference(dataset_dir=str(tmp_path), output_dir=str(out), ckpt_path=str(weights), measure=True)
    assert "biomarkers.csv exists" in str(find_input_error(raised.value))
    assert (out / "biomarkers.csv").stat().st_mtime_ns == stamp


def test_progress_counts_the_images_as_they_are_done_and_ends_with_the_work(tmp_path, capsys):
    image, _ = fundus_like(48, 64)
    for name in ("a", "b"):
        write_image(tmp_path / "in" / f"{name}.png", image)
    network = SlowNetwork(capsys)
    run_inference(
        dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), allow_untrained=True, network=network
    )
    assert ["0/2" in network.seen[0], "1/2" in network.seen[1]] == [True, True], network.seen
    drawn = (network.drawn + capsys.readouterr().err).replace("\r", "\n").splitlines()
    assert "2/2" in drawn[-1] and sorted(p.name for p in (tmp_path / "out").iterdir())[0] == "a_mask.png"
