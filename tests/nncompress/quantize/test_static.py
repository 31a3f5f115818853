"""Post-training static int8: the artifact loads, runs integer kernels, stays close to fp32, is ~4x smaller.

Tolerances (and why):
- seed Net (trained, real MNIST images): top-1 agreement with fp32 >= 0.98 and max |p_int8 - p_fp32|
  <= 0.1 on class probabilities. Measured: agreement 0.996 on 512 images, max probability error 0.022.
  Probabilities, not the log-softmax outputs: a log-probability near -30 can move by whole units while
  meaning nothing.
- tiny ResNet (random weights, folded BatchNorm, residual adds): agreement >= 0.95 and max abs logit
  error <= 10% of the largest fp32 logit. Measured: 1.0 and 1.6%.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from nncompress.quantize import QuantConfigError, load_quantized, plan_quantization, quantize
from tests.nncompress.quantize.factories import batches, mnist, tiny_resnet, top1_agreement, trained_net


@pytest.fixture(scope="module")
def net_data() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    x, y = mnist(512)
    return trained_net(), x, y


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_seed_net_static_int8_is_close_smaller_and_integer(net_data, fmt: str, tmp_path: Path) -> None:
    net, x, _ = net_data
    result = quantize(net, x[:1], {"format": fmt}, calibration=batches(x[:256], 64), out_dir=tmp_path)

    assert result.calibration_batches_used == 4
    assert result.quantized_layers == ["conv1", "conv2", "fc1", "fc2"]
    ops = _ops(result.onnx_path)
    if fmt == "qdq":
        assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    else:
        assert {"QLinearConv", "QGemm"} & ops and "Conv" not in ops
    with torch.no_grad():
        ref = net(x)
    out = load_quantized(result.onnx_path)(x)
    assert isinstance(out, torch.Tensor) and out.shape == ref.shape
    assert top1_agreement(out, ref) >= 0.98
    assert (out.exp() - ref.exp()).abs().max().item() <= 0.1

    for layer in result.layers:
        assert layer.weight_dtype == "int8" and layer.per_channel
        # 1 byte per weight plus a 4-byte scale and 1-byte zero point per output channel.
        assert layer.fp32_weight_bytes / layer.int8_weight_bytes >= 3.3, layer
    fc1 = next(layer for layer in result.layers if layer.name == "fc1")
    assert fc1.fp32_weight_bytes == 500 * 800 * 4
    assert result.bytes["int8_onnx"] < result.bytes["fp32_onnx"] / 3.5


def test_excluded_layer_stays_float(net_data, tmp_path: Path) -> None:
    net, x, _ = net_data
    spec = {"config_list": [{"op_types": ["default"]}, {"exclude": True, "op_names": ["fc2"]}]}
    result = quantize(net, x[:1], spec, calibration=[x[:64]], out_dir=tmp_path)
    assert result.quantized_layers == ["conv1", "conv2", "fc1"]
    assert [layer.name for layer in result.layers] == ["conv1", "conv2", "fc1"]
    assert result.float_layers == ("fc2",)
    graph = onnx.load(str(result.onnx_path)).graph
    assert "fc2.weight" in {i.name for i in graph.initializer}  # still the float initializer
    assert "fc2.weight_quantized" not in {i.name for i in graph.initializer}


def test_per_tensor_granularity_gives_one_scale(net_data, tmp_path: Path) -> None:
    net, x, _ = net_data
    spec = {"config_list": [{"op_types": ["Conv2d", "Linear"], "granularity": "per_tensor"}]}
    result = quantize(net, x[:1], spec, calibration=[x[:64]], out_dir=tmp_path)
    assert all(layer.quantized and not layer.per_channel for layer in result.layers)


def test_tiny_resnet_with_batchnorm_and_residuals(tmp_path: Path) -> None:
    model = tiny_resnet()
    x = torch.randn(96, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    result = quantize(model, x[:16], {}, calibration=batches(x[:64], 32), out_dir=tmp_path)
    assert result.fidelity["examples"] == 16 and result.fidelity["top1_agreement"] >= 0.9
    assert result.fidelity["max_abs_error"] <= 0.1 * result.fidelity["fp32_max_abs"]
    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert result.quantized_layers == names  # shortcut convs included: layers.1.0.shortcut.0 ...
    assert "layers.1.0.shortcut.0" in names
    with torch.no_grad():
        ref = model(x)
    out = load_quantized(result.onnx_path)(x)
    assert top1_agreement(out, ref) >= 0.95
    assert (out - ref).abs().max().item() <= 0.1 * ref.abs().max().item()
    fp32 = sum(layer.fp32_weight_bytes for layer in result.layers)
    int8 = sum(layer.int8_weight_bytes for layer in result.layers)
    assert fp32 / int8 >= 3.5


def test_per_layer_weight_settings_in_qdq(net_data, tmp_path: Path) -> None:
    net, x, _ = net_data
    spec = {
        "config_list": [
            {"op_types": ["default"]},
            {"op_names": ["fc1"], "granularity": "per_tensor"},
            {"op_names": ["fc2"], "quant_dtype": "uint8"},  # uint8 activations are the default anyway
        ]
    }
    result = quantize(net, x[:1], spec, calibration=[x[:64]], out_dir=tmp_path)
    got = {layer.name: (layer.weight_dtype, layer.per_channel) for layer in result.layers}
    assert got == {
        "conv1": ("int8", True),
        "conv2": ("int8", True),
        "fc1": ("int8", False),
        "fc2": ("uint8", True),
    }
    with torch.no_grad():
        ref = net(x)
    assert top1_agreement(load_quantized(result.onnx_path)(x), ref) >= 0.98


def test_mixed_settings_onnxruntime_cannot_write_are_refused_before_any_work(
    net_data, tmp_path: Path
) -> None:
    net, x, _ = net_data
    weights = {"config_list": [{"op_types": ["Conv2d"]}, {"op_types": ["Linear"], "quant_dtype": "uint8"}]}
    activations = {"config_list": [{"op_types": ["Conv2d"]}, {"op_types": ["Linear"], "quant_dtype": "int8"}]}
    cases = [
        (
            {**weights, "format": "qoperator"},
            "config_list[1]: layer 'fc1' asks for weight uint8 symmetric per channel but layer 'conv1' "
            "(config_list[0]) for int8 symmetric per channel; the onnxruntime quantizer applies one weight "
            "setting to the whole model unless the format is 'qdq' in mode 'static' or 'qat', so give these "
            "entries the same quant_dtype and quant_scheme",
        ),
        (
            activations,
            "config_list[1]: layer 'fc1' asks for activation int8 affine per tensor but layer 'conv1' "
            "(config_list[0]) for uint8 affine per tensor; the onnxruntime quantizer applies one activation "
            "setting to the whole model, so give these entries the same quant_dtype and quant_scheme",
        ),
    ]
    for spec, message in cases:
        with pytest.raises(QuantConfigError) as caught:
            plan_quantization(net, spec)
        assert caught.value.message == message
        with pytest.raises(QuantConfigError) as caught:
            quantize(net, x[:1], spec, calibration=[x[:8]], out_dir=tmp_path / "out")
        assert caught.value.message == message
        assert not (tmp_path / "out").exists()  # refused before any export


def test_static_needs_calibration(net_data, tmp_path: Path) -> None:
    net, x, _ = net_data
    with pytest.raises(QuantConfigError, match="calibration: mode 'static' needs calibration batches"):
        quantize(net, x[:1], {}, out_dir=tmp_path)
    with pytest.raises(QuantConfigError, match="calibration: the iterable gave no batch"):
        quantize(net, x[:1], {}, calibration=[], out_dir=tmp_path)


def test_calibration_reads_at_most_the_asked_batches_and_ignores_labels(net_data, tmp_path: Path) -> None:
    net, x, y = net_data
    loader = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    result = quantize(net, x[:1], {"calibration_batches": 3}, calibration=loader, out_dir=tmp_path)
    assert result.calibration_batches_used == 3
