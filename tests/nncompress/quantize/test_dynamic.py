"""Dynamic int8 for Linear/LSTM models: weights stored as int8, activations quantized per batch.

Tolerance: the LSTM classifier has random weights, so its logits are small and close together; the
check is top-1 agreement >= 0.95 and max abs logit error <= 10% of the largest fp32 logit. Measured:
agreement 0.984 on 64 sequences, error 1.2% of the largest logit.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch

from nncompress.quantize import load_quantized, quantize
from tests.nncompress.quantize.factories import lstm as make_lstm
from tests.nncompress.quantize.factories import mnist, tokens, top1_agreement, trained_net


def test_lstm_classifier_dynamic_int8(tmp_path: Path) -> None:
    model = make_lstm()
    x = tokens(64)
    result = quantize(model, x[:1], {"mode": "dynamic"}, out_dir=tmp_path)

    assert result.quantized_layers == ["rnn", "head"]
    assert result.calibration_batches_used == 0
    ops = {n.op_type for n in onnx.load(str(result.onnx_path)).graph.node}
    assert {"DynamicQuantizeLSTM", "MatMulInteger"} <= ops
    rnn = next(layer for layer in result.layers if layer.name == "rnn")
    # W (4*128 x 64) and R (4*128 x 128), fp32 -> int8 plus per-gate-row scales.
    assert rnn.fp32_weight_bytes == (512 * 64 + 512 * 128) * 4
    assert rnn.fp32_weight_bytes / rnn.int8_weight_bytes >= 3.5
    with torch.no_grad():
        ref = model(x)
    out = load_quantized(result.onnx_path)(x)
    assert top1_agreement(out, ref) >= 0.95
    assert (out - ref).abs().max().item() <= 0.1 * ref.abs().max().item()


def test_dynamic_linear_layers_of_the_seed_net(tmp_path: Path) -> None:
    # The exporter writes these Linear layers as Gemm, which has no dynamic integer kernel; they are
    # rewritten to MatMul + Add first, or they would silently stay float.
    net = trained_net()
    x, _ = mnist(256)
    result = quantize(net, x[:1], {"mode": "dynamic"}, out_dir=tmp_path)
    assert result.quantized_layers == ["fc1", "fc2"]
    with torch.no_grad():
        ref = net(x)
    out = load_quantized(result.onnx_path)(x)
    assert top1_agreement(out, ref) >= 0.98
    assert (out.exp() - ref.exp()).abs().max().item() <= 0.1


def test_dynamic_only_the_named_layer(tmp_path: Path) -> None:
    model = make_lstm()
    result = quantize(
        model, tokens(2), {"mode": "dynamic", "config_list": [{"op_names": ["rnn"]}]}, out_dir=tmp_path
    )
    assert [layer.name for layer in result.layers] == ["rnn"]
    assert result.float_layers == ("embed", "head")
    inits = {i.name for i in onnx.load(str(result.onnx_path)).graph.initializer}
    assert not [name for name in inits if name.startswith("head.") and name.endswith("_quantized")]
    assert any(name.startswith("onnx::LSTM") and name.endswith("_quantized") for name in inits)
