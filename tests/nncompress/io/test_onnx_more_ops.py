"""Transposed convolutions (U-Net decoders), GroupNorm/InstanceNorm and GatherND import and match torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nncompress import prune, speedup
from nncompress.io.onnx_import import inspect_onnx, load_onnx
from nncompress.io.onnx_import.ops_norm_deconv import onnx_gather_nd


class _Decoder(nn.Module):
    """Down with a conv, up with a transposed conv, GroupNorm and InstanceNorm on the way."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.up = nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1)
        self.inorm = nn.InstanceNorm2d(6, affine=True)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.down(x)))
        return self.head(torch.relu(self.inorm(self.up(x))))


@pytest.mark.parametrize("opset", [17, 18])
def test_decoder_with_transposed_conv_and_norms_imports(tmp_path: Path, opset: int) -> None:
    torch.manual_seed(0)
    model = _Decoder().eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(
        model, (torch.randn(1, 3, 16, 16),), str(path), dynamo=False, opset_version=opset,
        input_names=["input"], dynamic_axes={"input": {0: "batch"}},
    )  # fmt: skip
    summary = inspect_onnx(path)
    assert not summary.unsupported_ops
    assert {("up", "ConvTranspose2d"), ("down", "Conv2d")} <= {(la.name, la.type) for la in summary.layers}
    gm = load_onnx(path)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-5)
    assert isinstance(gm.get_submodule("up"), nn.ConvTranspose2d)


def test_imported_transposed_conv_prunes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 6, 2, stride=2),
                          nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()  # fmt: skip
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, opset_version=17)
    gm = load_onnx(path)
    x = torch.randn(1, 3, 8, 8)
    config = [{"sparsity_per_layer": 0.5, "op_names": ["0", "2"]}]
    result = prune(gm, config, pruner="l1norm", example_inputs=x)
    small = speedup(gm, result.masks, x).model
    assert small.get_submodule("0").out_channels == 4 and small.get_submodule("2").out_channels == 3


def test_gather_nd_follows_onnx_semantics() -> None:
    data = torch.arange(24.0).reshape(2, 3, 4)
    # batch_dims 0: index pairs into the first two axes, negative indices from the end.
    out = onnx_gather_nd(data, torch.tensor([[0, 1], [1, -1]]))
    torch.testing.assert_close(out, torch.stack([data[0, 1], data[1, 2]]))
    # batch_dims 1: one index per batch row.
    out = onnx_gather_nd(data, torch.tensor([[2], [0]]), batch_dims=1)
    torch.testing.assert_close(out, torch.stack([data[0, 2], data[1, 0]]))
