"""Export from the bundle: MONAI's ckpt_export (TorchScript) and onnx_export give the eager network's output on a real
DRIVE photograph."""

import numpy as np
import pytest
import torch
from conftest import bundle
from monai.transforms import Compose

from iternet_monai.engines.checkpoints import BUNDLE_DIR as BUNDLE
from iternet_monai.engines.checkpoints import iternet_for_weights
from iternet_monai.inferers.inferer import ONNX_EXPORT
from iternet_monai.networks import IterNet
from iternet_monai.transforms.fundus import fundus_loading

INFERENCE = "bundles/iternet/configs/inference.json"


@pytest.fixture
def weights_and_photo(drive, tmp_path):
    """float16 weights of a small IterNet (not the config's shape) and a DRIVE photograph padded to 16."""
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    torch.save({k: v.half() for k, v in IterNet(features=4).state_dict().items()}, path)
    image = Compose(fundus_loading(["image"]))({"image": str(drive / "test" / "images" / "01_test.tif")})["image"]
    photo = torch.nn.functional.pad(image[None].as_tensor(), (0, -584 % 16, 0, -565 % 16))
    with torch.no_grad():
        eager = iternet_for_weights(path).eval()(photo)
    return path, photo, eager


@pytest.mark.slow
def test_ckpt_export_torchscript_matches_eager_on_a_drive_photo(weights_and_photo, tmp_path):
    weights, photo, eager = weights_and_photo
    export = ["ckpt_export", "network_def", "--config_file", INFERENCE, "--ckpt_file", str(weights)]
    result = bundle(*export, "--filepath", str(tmp_path / "wrong.ts"))  # the network from the bundle's weights
    assert result.returncode != 0 and not (tmp_path / "wrong.ts").exists()
    assert "the weights are for IterNet(features=4, iterations=3, depth=2) but the network is" in result.stderr
    result = bundle(*export, "--ckpt_path", str(weights), "--filepath", str(tmp_path / "model.ts"))
    assert result.returncode == 0, result.stderr[-3000:]
    scripted = torch.jit.load(tmp_path / "model.ts")
    with torch.no_grad():
        assert (scripted(photo) - eager).abs().max() < 1e-4


@pytest.mark.slow
def test_onnx_export_matches_eager_on_a_drive_photo_of_any_size(weights_and_photo, tmp_path):
    import onnxruntime

    weights, photo, eager = weights_and_photo
    result = bundle(
        "onnx_export", "network_def", "--config_file", INFERENCE, "--ckpt_file", str(weights),
        "--ckpt_path", str(weights), "--filepath", str(tmp_path / "model.onnx"), "--input_shape", "[2,3,64,64]",
        "--converter_kwargs", repr(ONNX_EXPORT),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": photo.numpy()})[0]
    assert logits.shape == (1, 1, 576, 592)
    assert np.abs(logits - eager.numpy()).max() < 1e-4


@pytest.mark.slow
def test_onnxruntime_backend_gives_the_pytorch_output_and_exports_once(weights_and_photo, tmp_path):
    from iternet_monai.inferers.inferer import OnnxRuntimeNetwork, prepare_network

    weights, photo, eager = weights_and_photo
    network = iternet_for_weights(weights)
    runtime = OnnxRuntimeNetwork(network, cache_dir=tmp_path / "cache")
    assert (runtime(photo) - eager).abs().max() < 1e-4
    (exported,) = (tmp_path / "cache").iterdir()
    stamp = exported.stat().st_mtime_ns
    OnnxRuntimeNetwork(network, cache_dir=tmp_path / "cache")(photo)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [exported.name]
    assert exported.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="runs on the CPU only"):
        prepare_network(network, "cuda", backend="onnxruntime")


@pytest.mark.slow
def test_onnxruntime_backend_runs_the_weights_loaded_after_it_was_prepared(weights_and_photo, tmp_path):
    """The bundle prepares the network, then its weights loader loads the weights when the evaluator starts: ONNX
    Runtime must run those weights, not the untrained ones it was given."""
    from iternet_monai.engines.checkpoints import iternet_shaped_for
    from iternet_monai.handlers import WeightsLoader
    from iternet_monai.inferers.inferer import prepare_network

    weights, photo, eager = weights_and_photo
    network = iternet_shaped_for(weights)
    runtime = prepare_network(network, "cpu", backend="onnxruntime")
    WeightsLoader(weights, network).load()
    assert (runtime(photo) - eager).abs().max() < 1e-4


@pytest.mark.slow
def test_the_bundles_own_weights_export_naming_the_file_once(tmp_path):
    """The README's export commands: ``--ckpt_file`` is the only flag naming the weights, whatever their width."""
    shipped = BUNDLE / "models" / "model.pt"
    if not shipped.is_file():
        pytest.skip("the bundle ships no models/model.pt")
    torch.manual_seed(0)
    photo = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        eager = iternet_for_weights(shipped).eval()(photo)
    common = ["--config_file", INFERENCE, "--ckpt_file", str(shipped), "--net_id", "network_def"]
    result = bundle("ckpt_export", *common, "--filepath", str(tmp_path / "x.ts"))
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.no_grad():
        assert (torch.jit.load(tmp_path / "x.ts")(photo) - eager).abs().max() < 1e-4
    result = bundle(
        "onnx_export", *common, "--filepath", str(tmp_path / "x.onnx"), "--input_shape", "[2,3,64,64]",
        "--converter_kwargs", repr(ONNX_EXPORT),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "x.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"image": photo.numpy()})[0] - eager.numpy()).max() < 1e-4


def test_auto_backend_is_onnxruntime_on_a_cpu_where_installed_and_pytorch_on_a_gpu(monkeypatch):
    import importlib.util

    from iternet_monai.inferers.inferer import resolve_backend

    assert resolve_backend("auto", "cpu") == "onnxruntime"  # the test extra installs it
    assert resolve_backend("auto", "cuda") == resolve_backend("pytorch", "cpu") == "pytorch"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    assert resolve_backend("auto", "cpu") == "pytorch"
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        resolve_backend("tensorrt")
