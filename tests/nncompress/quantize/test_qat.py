"""Quantization-aware training: fake quantization during the caller's training loop, then real int8."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn
from torch.nn.utils import parametrize

from nncompress.quantize import QuantConfigError, load_quantized, quantize
from nncompress.quantize.qat import FakeQuantWeight
from nncompress.quantize.resolve import TensorQuant
from tests.nncompress.quantize.factories import batches, mnist, tiny_resnet, top1_agreement, trained_net


def test_fake_quant_weight_lands_on_onnxruntime_grid() -> None:
    weight = torch.randn(6, 4, 3, 3)
    snapped = FakeQuantWeight(TensorQuant("int8", "symmetric", per_channel=True))(weight)
    scale = weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    levels = snapped / scale
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.abs().max() <= 127 + 1e-4
    assert (snapped - weight).abs().max() <= scale.max() / 2 + 1e-6


def test_fake_quant_passes_gradients_straight_through() -> None:
    weight = torch.randn(5, 3, requires_grad=True)
    FakeQuantWeight(TensorQuant("int8", "symmetric", per_channel=False))(weight).sum().backward()
    assert weight.grad is not None and torch.equal(weight.grad, torch.ones_like(weight))


def test_qat_trains_fake_quantized_copy_and_converts_exactly(tmp_path: Path) -> None:
    net = trained_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = mnist(384)
    seen: dict[str, object] = {}

    def train_fn(model: nn.Module) -> None:
        seen["parametrized"] = parametrize.is_parametrized(model.fc1, "weight")
        seen["training"] = model.training
        seen["hooks"] = len(model.conv1._forward_pre_hooks)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for xb, yb in zip(batches(x[:256], 64), batches(y[:256], 64), strict=True):
            optimizer.zero_grad()
            F.nll_loss(model(xb), yb).backward()
            optimizer.step()

    result = quantize(
        net, x[:1], {"mode": "qat"}, calibration=batches(x[:128], 64), train_fn=train_fn, out_dir=tmp_path
    )
    assert seen == {"parametrized": True, "training": True, "hooks": 1}
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # caller's model untouched
    assert result.quantized_layers == ["conv1", "conv2", "fc1", "fc2"]

    # The trained weights were left on the int8 grid, so the int8 file holds exactly them.
    trained = result._model
    assert trained is not None and not parametrize.is_parametrized(trained.fc1)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(result.onnx_path)).graph.initializer}
    q, scale = inits["fc1.weight_quantized"], inits["fc1.weight_scale"]
    dequantized = torch.from_numpy(q.astype("float32") * scale.reshape(-1, 1))
    assert torch.allclose(dequantized, trained.fc1.weight.detach(), atol=1e-6)

    with torch.no_grad():
        ref = trained(x[256:])
    out = load_quantized(result.onnx_path)(x[256:])
    assert top1_agreement(out, ref) >= 0.98
    accuracy = float((out.argmax(1) == y[256:]).float().mean())
    assert accuracy >= 0.95


def test_qat_needs_a_train_fn_and_other_modes_refuse_one(tmp_path: Path) -> None:
    net = trained_net()
    x, _ = mnist(8)
    with pytest.raises(QuantConfigError, match="train_fn: mode 'qat' needs a training function"):
        quantize(net, x[:1], {"mode": "qat"}, calibration=[x], out_dir=tmp_path)
    with pytest.raises(QuantConfigError, match="train_fn: only mode 'qat' trains"):
        quantize(net, x[:1], {"mode": "static"}, calibration=[x], train_fn=lambda m: None, out_dir=tmp_path)


def test_qat_through_batchnorm_and_residuals(tmp_path: Path) -> None:
    model = tiny_resnet()
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(96, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (96,), generator=generator)

    def train_fn(m: nn.Module) -> None:
        optimizer = torch.optim.SGD(m.parameters(), lr=0.01)
        for xb, yb in zip(batches(x[:64], 32), batches(y[:64], 32), strict=True):
            optimizer.zero_grad()
            F.cross_entropy(m(xb), yb).backward()
            optimizer.step()

    result = quantize(
        model, x[:1], {"mode": "qat"}, calibration=batches(x[:64], 32), train_fn=train_fn, out_dir=tmp_path
    )
    assert len(result.quantized_layers) == len(result.layers) == 10
    trained = result._model
    assert trained is not None
    with torch.no_grad():
        ref = trained(x[64:])
    out = load_quantized(result.onnx_path)(x[64:])
    assert top1_agreement(out, ref) >= 0.9
    assert (out - ref).abs().max().item() <= 0.1 * ref.abs().max().item()
