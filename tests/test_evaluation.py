import json
import logging
import os

import numpy as np
import pytest
import torch
from conftest import bundle, drive_arrays, two_drive_images, write_image
from PIL import Image
from sklearn.metrics import roc_auc_score

from iternet_monai.cli import main as cli
from iternet_monai.data.maps import EvaluationError
from iternet_monai.metrics import protocol_metrics
from iternet_monai.networks import IterNet
from iternet_monai.utils.errors import InputError


def write_maps(drive, folder, suffix=".png", shape=None, stems=("01_test", "02_test")):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for stem in stems:
        truth = np.asarray(Image.open(drive / "test" / "1st_manual" / f"{stem[:2]}_manual1.gif")) > 0
        prob = np.clip(truth * 0.4 + rng.random(truth.shape) * 0.6, 0, 1)
        if shape:
            prob = prob[: shape[0], : shape[1]]
        if suffix == ".npy":
            np.save(folder / f"{stem}_prob.npy", prob)
        else:
            write_image(folder / f"{stem}_prob{suffix}", np.round(prob * 255).astype(np.uint8))
    return folder


def evaluate(drive, tmp_path, *extra):
    datalist = two_drive_images(drive, tmp_path)
    out = tmp_path / "out"
    code = cli(["evaluate", "--datalist", str(datalist), "--dataset-dir", str(drive), "--output", str(out), *extra])
    return code, out


def test_command_on_two_drive_images_with_given_maps(drive, tmp_path, capsys, caplog):
    maps = write_maps(drive, tmp_path / "maps")
    with caplog.at_level(logging.INFO):
        code, out = evaluate(drive, tmp_path, "--predictions", str(maps))
    assert code == 0
    assert "unable to load" not in caplog.text  # the GIF labels and masks load with their own reader
    content = json.loads((out / "metrics.json").read_text())
    probs, labels = [], []
    for stem in ("01_test", "02_test"):
        prob = np.asarray(Image.open(maps / f"{stem}_prob.png")) / 255.0
        truth = np.asarray(Image.open(drive / "test" / "1st_manual" / f"{stem[:2]}_manual1.gif")) > 0
        fov = np.asarray(Image.open(drive / "test" / "mask" / f"{stem}_mask.gif")) > 0
        probs.append(prob[fov])
        labels.append(truth[fov])
    probs, labels = np.concatenate(probs), np.concatenate(labels)
    assert content["pooled"]["auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)
    hard = probs >= 0.5
    counts = {"tp": hard & labels, "fp": hard & ~labels, "fn": ~hard & labels, "tn": ~hard & ~labels}
    assert {k: content["pooled_counts"][k] for k in counts} == {k: int(v.sum()) for k, v in counts.items()}
    assert content["protocol"]["images"] == 2 and "field of view" in content["protocol"]["region"]
    assert [row["image"] for row in content["per_image"]] == ["01_test", "02_test"]
    assert (out / "per_image.csv").read_text().splitlines()[0].startswith("image,auc,pr_auc,f1")
    for name in ("roc.png", "pr.png", "overlays/01_test.png", "overlays/02_test.png"):
        assert (out / name).stat().st_size > 0
    assert Image.open(out / "overlays" / "01_test.png").size == (565, 584)
    assert "connectivity" in capsys.readouterr().out
    whole = evaluate(drive, tmp_path, "--predictions", str(maps), "--no-fov", "--overwrite")[1]
    assert json.loads((whole / "metrics.json").read_text())["pooled"]["specificity"] != content["pooled"]["specificity"]


def test_existing_outputs_are_not_overwritten(drive, tmp_path, capsys):
    maps = write_maps(drive, tmp_path / "maps")
    assert evaluate(drive, tmp_path, "--predictions", str(maps))[0] == 0
    before = (tmp_path / "out" / "metrics.json").read_text()
    assert evaluate(drive, tmp_path, "--predictions", str(maps), "--threshold", "0.9")[0] == 2
    assert "metrics.json exists" in capsys.readouterr().err
    assert (tmp_path / "out" / "metrics.json").read_text() == before


def test_npy_maps_and_ground_truth_round_trip(drive, tmp_path):
    maps = write_maps(drive, tmp_path / "maps", ".npy")
    assert evaluate(drive, tmp_path, "--predictions", str(maps), "--gt-roundtrip", "576")[0] == 0
    content = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "576x576" in content["protocol"]["ground_truth"]


def drive_datalist(drive, tmp_path, stems, masks=True):
    """A datalist of DRIVE test images (with or without their official FoV masks)."""
    entries = [
        {
            "image": f"test/images/{stem}.tif",
            "label": f"test/1st_manual/{stem[:2]}_manual1.gif",
            **({"mask": f"test/mask/{stem}_mask.gif"} if masks is True or stem in masks else {}),
        }
        for stem in stems
    ]
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"testing": entries}))
    return path


def test_every_bad_map_is_named_before_scoring(drive, tmp_path, capsys):
    stems = ("01_test", "02_test", "03_test", "04_test", "05_test")
    maps = write_maps(drive, tmp_path / "maps", ".npy", stems=stems)
    np.save(maps / "01_test_prob.npy", np.zeros((560, 500)))
    nan, inf = np.zeros((584, 565)), np.zeros((584, 565))
    nan[3, 3], inf[5, 5] = np.nan, np.inf
    np.save(maps / "02_test_prob.npy", nan)
    np.save(maps / "03_test_prob.npy", inf)
    (maps / "04_test_prob.npy").unlink()
    (maps / "04_test_prob.png").write_bytes(b"not a png")
    (maps / "05_test_prob.npy").unlink()
    datalist, out = drive_datalist(drive, tmp_path, (*stems, "06_test")), tmp_path / "out"
    write_maps(drive, maps, ".npy", stems=("06_test",))
    args = ["evaluate", "--datalist", str(datalist), "--dataset-dir", str(drive), "--predictions", str(maps)]
    assert cli([*args, "--output", str(out)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "iternet-monai: 5 image(s) have no usable probability map; nothing was scored:"
    assert len(lines) == 6
    assert lines[1].endswith(
        f"05_test.tif: no map in {maps} (looked for 05_test.<ext> or 05_test_<anything>.<ext>, <ext> one of png, "
        "tif, tiff, npy, nii, nii.gz)"
    )
    assert "01_test_prob.npy: the map is 560x500 (HxW) but its image 01_test.tif is 584x565" in lines[2]
    assert "02_test_prob.npy: the probability map contains NaN values" in lines[3]
    assert "03_test_prob.npy: the probability map contains infinite values" in lines[4]
    assert "04_test_prob.png: cannot read the probability map" in lines[5]
    assert not out.exists()  # nothing scored, nothing written


def test_inference_output_folder_is_accepted_as_it_is(drive, tmp_path):
    import nibabel as nib

    from iternet_monai.data.maps import match_maps

    maps = tmp_path / "maps"
    truth = drive_arrays(drive, "01_test")[0]
    prob = np.clip(truth * 0.6 + 0.2, 0, 1)
    write_image(maps / "01_test_prob.png", np.round(prob * 255).astype(np.uint8))
    write_image(maps / "01_test_mask.png", (prob >= 0.5).astype(np.uint8) * 255)
    write_image(maps / "01_test_overlay.png", np.zeros(truth.shape + (3,), np.uint8) + np.uint8([0, 255, 64]))
    nib.save(nib.Nifti1Image(prob.T[:, :, None].astype(np.float32), np.eye(4)), str(maps / "01_test_prob.nii.gz"))
    write_image(maps / "02_test_mask.png", drive_arrays(drive, "02_test")[0].astype(np.uint8) * 255)
    write_image(maps / "02_test_overlay.png", np.zeros(truth.shape + (3,), np.uint8) + np.uint8([0, 255, 64]))
    code, out = evaluate(drive, tmp_path, "--predictions", str(maps))
    assert code == 0
    predictions = json.loads((out / "metrics.json").read_text())["protocol"]["predictions"]
    assert predictions["files"] == {"01_test": "01_test_prob.nii.gz", "02_test": "02_test_mask.png"}
    assert predictions["binary_maps"] == ["02_test_mask.png"]
    write_image(maps / "03_test_a.png", np.zeros((2, 2), np.uint8))
    write_image(maps / "03_test_b.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(EvaluationError, match=r"03_test.tif: several maps \(03_test_a.png, 03_test_b.png\)"):
        match_maps([{"image": "x/03_test.tif"}], maps)


def test_metrics_json_alone_recomputes_the_pooled_numbers(drive, tmp_path):
    """TP, FP, FN, TN and pixel totals pooled and per image, where each FoV came from, the rules."""
    maps = write_maps(drive, tmp_path / "maps")
    datalist, out = drive_datalist(drive, tmp_path, ("01_test", "02_test"), masks=("01_test",)), tmp_path / "out"
    args = ["evaluate", "--datalist", str(datalist), "--dataset-dir", str(drive), "--predictions", str(maps)]
    assert cli([*args, "--output", str(out)]) == 0
    content = json.loads((out / "metrics.json").read_text())
    counts, pooled = content["pooled_counts"], content["pooled"]
    tp, fp, fn, tn = counts["tp"], counts["fp"], counts["fn"], counts["tn"]
    assert pooled["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert pooled["sensitivity"] == pytest.approx(tp / (tp + fn), abs=1e-12)
    assert pooled["specificity"] == pytest.approx(tn / (tn + fp), abs=1e-12)
    assert pooled["accuracy"] == pytest.approx((tp + tn) / (tp + fp + fn + tn), abs=1e-12)
    rows = content["per_image"]
    for key in ("tp", "fp", "fn", "tn", "fov_pixels", "vessel_pixels"):
        assert sum(row[key] for row in rows) == counts[key], key
    truth, fov = drive_arrays(drive, "01_test")
    hard = np.asarray(Image.open(maps / "01_test_prob.png")) / 255.0 >= 0.5
    assert (rows[0]["tp"], rows[0]["fp"], rows[0]["fov_pixels"]) == (
        (hard & truth & fov).sum(),
        (hard & ~truth & fov).sum(),
        fov.sum(),
    )
    assert rows[0]["fov_source"].startswith("dataset mask") and rows[0]["fov_source"].endswith("01_test_mask.gif")
    assert rows[1]["fov_source"].startswith("derived: distance from the surround's colour")
    assert "dataset masks for 1 image(s), derived from the image for 1" in content["protocol"]["region"]
    rules = content["protocol"]["connectivity"]
    assert rules["thresholds"] == [round(i / 100, 2) for i in range(101)] and rules["t0_rule"].startswith("prob > 0")
    assert content["protocol"]["cal"]["alpha"] == 2 and content["protocol"]["binarisation"] == "prob >= 0.5"
    header = (out / "per_image.csv").read_text().splitlines()[0]
    assert header.endswith("betti0_error,tp,fp,fn,tn,fov_pixels,vessel_pixels,fov_source")
    assert not list(out.rglob(".*partial*"))  # every file was renamed into place


def test_empty_maps_nan_reasons_and_topology(drive, tmp_path, capsys):
    """An all-zero map: precision is NaN with its reason; eq. 3 connectivity stays near 1, CAL is 0."""
    maps = tmp_path / "maps"
    for stem in ("01_test", "02_test"):
        write_image(maps / f"{stem}_prob.png", np.zeros((584, 565), np.uint8))
    code, out = evaluate(drive, tmp_path, "--predictions", str(maps))
    assert code == 0
    table = capsys.readouterr().out
    assert "(nan: no positive prediction)" in table.splitlines()[7] and table.splitlines()[7].startswith("precision")
    text = (out / "metrics.json").read_text()
    content = json.loads(text, parse_constant=lambda name: pytest.fail(f"metrics.json is not strict JSON: {name}"))
    assert content["pooled"]["precision"] is None and content["per_image"][0]["precision"] is None
    assert content["nan_reasons"]["precision"] == "no positive prediction"
    assert content["per_image"][0]["nan_reasons"]["precision"] == "no positive prediction"
    assert content["pooled"]["connectivity"] > 0.98 and content["pooled"]["cal"] == 0.0


class FailsOnSecondImage(torch.nn.Module):
    """A stand-in network: all-background logits for the first image, an error on the second."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:
            raise EvaluationError("02_test.tif: the model failed")
        return torch.full_like(x[:, :1], -10.0)


def test_a_failure_mid_run_leaves_no_output_that_looks_complete(drive, tmp_path):
    from iternet_monai.engines import run_evaluation

    datalist = drive_datalist(drive, tmp_path, ("01_test", "02_test"))
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"testing": json.loads(datalist.read_text())["testing"][:1]}))
    options = {"mode": "whole_image", "device": "cpu", "allow_untrained": True}

    def run(path, **extra):
        return run_evaluation(path, drive, tmp_path / "out", network=FailsOnSecondImage(), **options, **extra)

    with pytest.raises(EvaluationError, match="the model failed"):
        run(datalist)
    assert not (tmp_path / "out").exists()
    run(one)
    before = (tmp_path / "out" / "metrics.json").read_text()
    with pytest.raises(EvaluationError, match="the model failed"):
        run(datalist, overwrite=True)
    assert (tmp_path / "out" / "metrics.json").read_text() == before
    assert sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir()) == ["01_test.png"]


def test_an_overwritten_evaluation_holds_only_its_own_overlays_and_no_leftovers(drive, tmp_path):
    """--overwrite with fewer images removes the overlays of the images no longer evaluated (the folder would
    otherwise mix two evaluations) and the temporary files an interrupted evaluation left; overlays alone (a killed
    evaluation) are an earlier evaluation's outputs too."""
    from iternet_monai.engines import run_evaluation

    maps = tmp_path / "maps"
    for stem in ("01_test", "02_test"):
        write_image(maps / f"{stem}_prob.png", np.zeros((584, 565), np.uint8))
    both, out = drive_datalist(drive, tmp_path, ("01_test", "02_test")), tmp_path / "out"
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"testing": json.loads(both.read_text())["testing"][:1]}))
    run_evaluation(both, drive, out, maps)
    leftover = out / "overlays" / ".02_test.png.a1b2.partial.png"
    leftover.write_bytes(b"half a png")
    os.utime(leftover, (1, 1))
    for name in ("metrics.json", "per_image.csv", "roc.png", "pr.png"):
        (out / name).unlink(missing_ok=True)
    with pytest.raises(InputError, match="01_test.png exists; choose another output folder or pass --overwrite"):
        run_evaluation(one, drive, out, maps)
    run_evaluation(one, drive, out, maps, overwrite=True)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["01_test.png"]
    assert json.loads((out / "metrics.json").read_text())["protocol"]["images"] == 1


def test_model_evaluation_records_the_inference_mode_that_ran(drive, tmp_path, monkeypatch):
    """``auto`` mode and backend are recorded as what ran: the whole image, and PyTorch where ONNX Runtime is not
    installed (as here, where it is hidden)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"
    torch.save(IterNet(features=4).state_dict(), ckpt)
    code, out = evaluate(drive, tmp_path, "--ckpt", str(ckpt), "--device", "cpu")
    assert code == 0
    predictions = json.loads((out / "metrics.json").read_text())["protocol"]["predictions"]
    assert predictions == {
        "checkpoint": str(ckpt), "device": "cpu", "mode": "whole_image", "tta": False, "backend": "pytorch"
    }  # fmt: skip


def untrained_weights(path, features=4):
    torch.manual_seed(0)
    torch.save(IterNet(features=features).state_dict(), path)
    return path


def test_model_evaluation_against_the_network_run_by_hand(drive, tmp_path):
    """The model's evaluation (one whole-image pass on a CPU) against the network run here on the photograph padded
    to a multiple of 16, scored by scikit-learn and numpy over the official FoV pixels."""
    ckpt = untrained_weights(tmp_path / "model.pt")
    threshold = 0.47  # the untrained network's probabilities lie around 0.47
    code, out = evaluate(drive, tmp_path, "--ckpt", str(ckpt), "--backend", "pytorch", "--threshold", str(threshold))
    assert code == 0
    content = json.loads((out / "metrics.json").read_text())
    network = IterNet(features=4).eval()
    network.load_state_dict(torch.load(ckpt))
    probs, labels = [], []
    for stem in ("01_test", "02_test"):
        photo = np.asarray(Image.open(drive / "test" / "images" / f"{stem}.tif").convert("RGB"), np.float32) / 255
        x = torch.as_tensor(photo.transpose(2, 1, 0).copy())[None]  # MONAI reads pictures as (C, W, H)
        padded = torch.nn.functional.pad(x, (0, -x.shape[3] % 16, 0, -x.shape[2] % 16))
        with torch.no_grad():
            prob = torch.sigmoid(network(padded))[0, 0, : x.shape[2], : x.shape[3]].numpy().T
        truth, fov = drive_arrays(drive, stem)
        probs.append(prob[fov])
        labels.append(truth[fov])
    probs, labels = np.concatenate(probs), np.concatenate(labels)
    assert content["pooled"]["auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-5)
    hard = probs >= threshold
    tp, fp = int((hard & labels).sum()), int((hard & ~labels).sum())
    assert abs(content["pooled_counts"]["tp"] - tp) + abs(content["pooled_counts"]["fp"] - fp) <= 5  # float ties
    assert 0 < content["pooled"]["f1"] < 1


def test_evaluation_config_is_the_inference_pipeline_with_the_protocol_report(tmp_path):
    """evaluate.json merged over inference.json: the same network and postprocessing ids, the protocol's metrics
    in the report, and saved maps scored without a sigmoid."""
    from iternet_monai.engines import evaluation_parser
    from iternet_monai.handlers import ProtocolReport

    parser = evaluation_parser(output_dir=str(tmp_path / "out"), connectivity=4, threshold=0.3)
    assert parser["report"]["_target_"] == "iternet_monai.handlers.ProtocolReport"
    assert parser["evaluator"]["postprocessing"] == "@postprocessing" and parser["handlers"][:2] == [
        "@weights_loader",
        "@report",
    ]
    assert parser.get_parsed_content("sigmoid") is True
    assert evaluation_parser(predictions=str(tmp_path)).get_parsed_content("sigmoid") is False
    handler = ProtocolReport(tmp_path / "out", connectivity=4, threshold=0.3)
    expected = protocol_metrics(0.3, 1)
    assert list(handler.metrics) == list(expected)
    for name, metric in handler.metrics.items():
        settings = {k: v for k, v in vars(expected[name]).items() if not k.startswith("_")}
        assert {k: v for k, v in vars(metric).items() if not k.startswith("_")} == settings, name


@pytest.mark.slow
def test_command_and_bundle_evaluating_write_identical_files(drive, tmp_path):
    """iternet-monai evaluate and python -m monai.bundle run evaluating are one run: on 2 DRIVE test images, with a
    model (whole image on a CPU by default) and with saved maps, the same metrics.json, per_image.csv and overlays."""
    ckpt = untrained_weights(tmp_path / "model.pt")
    datalist = two_drive_images(drive, tmp_path)
    maps = write_maps(drive, tmp_path / "maps")
    configs = "['bundles/iternet/configs/inference.json','bundles/iternet/configs/evaluate.json']"
    for name, command, bundle_options in (
        ("model", ["--ckpt", str(ckpt), "--backend", "pytorch"], ["--ckpt_path", str(ckpt), "--backend", "pytorch"]),
        ("maps", ["--predictions", str(maps)], ["--predictions", str(maps)]),
    ):
        code, _ = evaluate(drive, tmp_path, *command, "--threshold", "0.47", "--output", str(tmp_path / name))
        assert code == 0
        result = bundle(
            "run", "evaluating", "--config_file", configs, "--dataset_dir", str(drive), "--datalist", str(datalist),
            "--output_dir", str(tmp_path / f"bundle_{name}"), "--threshold", "0.47", *bundle_options,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        ours, theirs = tmp_path / name, tmp_path / f"bundle_{name}"
        content = json.loads((ours / "metrics.json").read_text())
        assert json.loads((theirs / "metrics.json").read_text()) == content
        assert content["protocol"]["images"] == 2 and 0 < content["pooled"]["f1"] < 1
        for file in ("per_image.csv", "overlays/01_test.png", "overlays/02_test.png"):
            assert (ours / file).read_bytes() == (theirs / file).read_bytes(), (name, file)
    assert json.loads((tmp_path / "model" / "metrics.json").read_text())["protocol"]["predictions"]["mode"] == (
        "whole_image"
    )
    again = bundle(
        "run", "evaluating", "--config_file", configs, "--dataset_dir", str(drive), "--datalist", str(datalist),
        "--output_dir", str(tmp_path / "bundle_maps"), "--predictions", str(maps),
    )  # fmt: skip
    assert again.returncode != 0
    assert f"{tmp_path / 'bundle_maps' / 'metrics.json'} exists; choose another output folder or pass --overwrite" in (
        again.stdout + again.stderr
    )


@pytest.mark.parametrize("high", [1, 255])
def test_binary_maps_are_read_as_binary_and_said_so(drive, tmp_path, caplog, high):
    maps = tmp_path / "maps"
    for stem in ("01_test", "02_test"):
        write_image(maps / f"{stem}_prob.png", drive_arrays(drive, stem)[0].astype(np.uint8) * high)
    with caplog.at_level("INFO"):
        code, out = evaluate(drive, tmp_path, "--predictions", str(maps))
    assert code == 0
    content = json.loads((out / "metrics.json").read_text())
    assert content["pooled"]["f1"] == 1.0 and content["pooled"]["cal"] == 1.0  # the map is the ground truth
    assert content["protocol"]["predictions"]["binary_maps"] == ["01_test_prob.png", "02_test_prob.png"]
    assert "2 binary map(s)" in caplog.text and "not a ranking" in caplog.text
