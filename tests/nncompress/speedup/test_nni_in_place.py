"""Issue 14: NNI's flow shrinks the very object the caller holds, even when the forward hard-codes a
shape; and a model that ends up no smaller is reported as such (preflight, result flag, warning)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nncompress import preflight
from nncompress.models.mnist import Net
from nncompress.pruners import L1NormPruner
from nncompress.speedup import ModelSpeedup, speedup

CONFIG = [
    {"sparsity_per_layer": 0.5, "op_types": ["Conv2d", "Linear"]},
    {"exclude": True, "op_names": ["fc2"]},
]


def test_nni_flow_shrinks_the_callers_model_with_a_hard_coded_view() -> None:
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(1, 1, 28, 28)
    pruner = L1NormPruner(model, CONFIG, dummy_input=x)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    with torch.no_grad():
        masked = model(x)

    returned = ModelSpeedup(model, x, masks).speedup_model()

    assert returned is model and type(model) is Net
    assert (model.conv1.out_channels, model.conv2.out_channels, model.fc1.in_features) == (10, 25, 400)
    assert "Conv2d(10, 25" in str(model) and "in_features=400" in str(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), masked, rtol=1e-4, atol=1e-5)
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert Net().forward is not model.forward, "other instances keep the class's forward"
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in Net().parameters())


class _NormedStack(nn.Module):
    """Every prunable width sits behind an affine-free LayerNorm (nothing to mask) or is the output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16, elementwise_affine=False)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.fc1(x)))


def test_no_smaller_is_reported_by_preflight_result_and_warning() -> None:
    torch.manual_seed(0)
    model = _NormedStack().eval()
    x = torch.randn(2, 8)
    config = [{"sparsity_per_layer": 0.5, "op_names": ["fc1"]}]
    report = preflight(model, config, x)
    assert not report.will_shrink
    assert report.blocked_by and "LayerNorm" in report.blocked_by[0]

    masks = {"fc1": {"weight": (torch.rand(16, 8) > 0.5).float()}}  # element sparsity: no whole channel
    result = speedup(model, masks, x)
    assert not result.smaller and result.to_dict()["smaller"] is False
    assert any("LayerNorm" in b for b in result.blocked_by)
    with pytest.warns(UserWarning, match="removed no parameter"):
        ModelSpeedup(model, x, masks).speedup_model()
