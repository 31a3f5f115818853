"""Prune -> speedup -> quantize: the shrunk model (an fx.GraphModule after a view rewrite) quantizes."""

from __future__ import annotations

from pathlib import Path

import torch

from nncompress.pruners import prune
from nncompress.quantize import load_quantized, quantize
from nncompress.speedup import speedup
from tests.nncompress.quantize.factories import batches, mnist, top1_agreement, trained_net


def test_pruned_and_sped_up_seed_net_quantizes(tmp_path: Path) -> None:
    net = trained_net()
    x, _ = mnist(256)
    config = [{"sparsity_per_layer": 0.5, "op_names": ["conv1", "conv2", "fc1"]}]
    masks = prune(net, config, example_inputs=x[:1]).masks
    small = speedup(net, masks, x[:1]).model
    assert isinstance(small, torch.fx.GraphModule)  # x.view(-1, 800) had to be rewritten

    result = quantize(small, x[:1], {}, calibration=batches(x[:128], 64), out_dir=tmp_path)
    assert result.quantized_layers == ["conv1", "conv2", "fc1", "fc2"]
    fc1 = next(layer for layer in result.layers if layer.name == "fc1")
    assert fc1.fp32_weight_bytes == 250 * 400 * 4  # halved in and out
    with torch.no_grad():
        ref = small(x)
    out = load_quantized(result.onnx_path)(x)
    assert top1_agreement(out, ref) >= 0.97
