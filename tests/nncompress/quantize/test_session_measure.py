"""Loading the int8 artifact without the project's model code, and measuring it next to fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nncompress.errors import ArtifactError
from nncompress.quantize import load_quantized, quantize
from tests.nncompress.quantize.factories import batches, mnist, tiny_resnet, trained_net


@pytest.fixture(scope="module")
def net_result(tmp_path_factory: pytest.TempPathFactory):
    x, _ = mnist(256)
    out = tmp_path_factory.mktemp("net")
    return quantize(trained_net(), x[:1], {}, calibration=batches(x[:128], 64), out_dir=out)


def test_session_takes_numpy_or_tensors(net_result) -> None:
    x, _ = mnist(4)
    model = load_quantized(net_result.onnx_path, threads=1)
    from_tensor = model(x)
    from_numpy = model(x.numpy())
    assert isinstance(from_tensor, torch.Tensor) and isinstance(from_numpy, np.ndarray)
    assert from_numpy.shape == (4, 10)
    np.testing.assert_array_equal(from_tensor.numpy(), from_numpy)
    assert model.input_names == ("input_0",)
    with pytest.raises(ArtifactError, match="takes 1 inputs, got 2"):
        model.run(x, x)


def test_loading_a_missing_or_corrupt_file_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="onnxruntime cannot load"):
        load_quantized(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="onnxruntime cannot load"):
        load_quantized(bad)


def test_measure_reports_both_sides_of_the_same_run(net_result) -> None:
    x, y = mnist(256)
    metrics = net_result.measure(
        list(zip(batches(x, 128), batches(y, 128), strict=True)), batch_sizes=(1, 8), runs=3, threads=1
    )
    assert set(metrics.latency_ms) == {1, 8}
    for timings in metrics.latency_ms.values():
        assert set(timings) == {"fp32_torch", "fp32_onnx", "int8_onnx"}
        assert all(ms > 0 for ms in timings.values())
    assert metrics.speedup[8] == pytest.approx(
        metrics.latency_ms[8]["fp32_onnx"] / metrics.latency_ms[8]["int8_onnx"]
    )
    assert metrics.bytes == {
        "fp32_onnx": net_result.fp32_onnx_path.stat().st_size,
        "int8_onnx": net_result.onnx_path.stat().st_size,
    }
    accuracy = metrics.accuracy
    assert accuracy is not None and accuracy.examples == 256
    # Shipped weights: 97.5% on the shipped subset; int8 within a point of fp32.
    assert accuracy.fp32 >= 0.95 and abs(accuracy.delta_points) <= 1.0
    assert accuracy.agreement >= 0.98
    document = json.loads(json.dumps({"metrics": metrics.to_dict(), "result": net_result.to_dict()}))
    assert document["metrics"]["latency_ms"]["8"]["int8_onnx"] > 0
    assert document["result"]["layers"][2]["name"] == "fc1"


def test_pytorch_int8_artifact_where_fx_can_trace(tmp_path: Path) -> None:
    model = tiny_resnet()
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    result = quantize(model, x[:1], {"torch_artifact": True}, calibration=[x], out_dir=tmp_path)
    assert result.torch_error is None and result.torch_path is not None
    assert result.bytes["torch_int8"] == result.torch_path.stat().st_size
    scripted = torch.jit.load(str(result.torch_path))
    graph = str(scripted.inlined_graph)
    assert "quantized::conv2d" in graph and "quantized::linear" in graph
    with torch.no_grad():
        ref, out = model(x), scripted(x)
    assert (out - ref).abs().max().item() <= 0.1 * ref.abs().max().item()


def test_pytorch_int8_failure_is_reported_not_raised(tmp_path: Path) -> None:
    # The seed Net's x.view(-1, 800) fails on the channels-last tensors torch's quantized conv returns;
    # the ONNX artifact is still written and the reason is kept.
    x, _ = mnist(16)
    result = quantize(trained_net(), x[:1], {"torch_artifact": True}, calibration=[x], out_dir=tmp_path)
    assert result.torch_path is None
    assert result.torch_error is not None and "view" in result.torch_error
    assert result.onnx_path.exists()
