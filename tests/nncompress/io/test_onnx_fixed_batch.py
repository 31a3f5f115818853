"""A graph exported with a fixed batch still runs at any batch after import (verification needs two sizes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nncompress.io.onnx_import import load_onnx


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4)
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_fixed_batch_export_runs_at_other_batches(tmp_path: Path, dynamo: bool) -> None:
    torch.manual_seed(0)
    model = _Small().eval()
    path = tmp_path / "m.onnx"
    # No dynamic axes: the batch of 1 is written into the graph (the dynamo exporter's Reshape [1, 128]).
    torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), str(path), dynamo=dynamo, external_data=False)
    gm = load_onnx(path)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-5)
    assert {"conv", "fc"} <= {name for name, _ in gm.named_modules()}
