"""The seed reproduction: Net + the seed config + L1NormPruner keeps exactly 10/25/250 channels."""

from __future__ import annotations

import pytest
import torch

from nncompress.models.mnist import Net
from nncompress.pruners import L1NormPruner, prune
from tests.nncompress.pruners.factories import SEED_CONFIG, kept_rows


def _norms(w: torch.Tensor) -> torch.Tensor:
    return w.detach().abs().reshape(w.shape[0], -1).sum(dim=1)


@pytest.mark.parametrize("dummy_input", [None, torch.randn(1, 1, 28, 28)], ids=["no-input", "traced"])
def test_seed_config_keeps_10_25_250_channels_with_the_largest_l1_norms(
    dummy_input: torch.Tensor | None,
) -> None:
    torch.manual_seed(0)
    net = Net()
    original = {n: p.detach().clone() for n, p in net.named_parameters()}
    _, masks = L1NormPruner(net, SEED_CONFIG, dummy_input=dummy_input).compress()

    assert set(masks) == {"conv1", "conv2", "fc1"}  # fc2 is excluded
    for name, channels, kept in (("conv1", 20, 10), ("conv2", 50, 25), ("fc1", 500, 250)):
        weight_mask, bias_mask = masks[name]["weight"], masks[name]["bias"]
        assert weight_mask.shape == original[f"{name}.weight"].shape
        assert weight_mask.dtype == torch.float32
        assert set(weight_mask.unique().tolist()) <= {0.0, 1.0}
        keep = kept_rows(weight_mask)
        assert int(keep.sum()) == kept and keep.numel() == channels
        # whole filters, bias included
        assert torch.equal(bias_mask.bool(), keep)
        # the kept filters are exactly the ones with the largest L1 norms
        top = torch.topk(_norms(original[f"{name}.weight"]), kept).indices
        assert set(top.tolist()) == set(torch.nonzero(keep).flatten().tolist())


def test_functional_prune_reports_the_seed_channels() -> None:
    result = prune(Net(), SEED_CONFIG, pruner="l1norm", example_inputs=torch.randn(1, 1, 28, 28))
    got = {n: (r.kept_channels, r.channels) for n, r in result.layers.items()}
    assert got == {"conv1": (10, 20), "conv2": (25, 50), "fc1": (250, 500)}
    assert result.layers["conv1"].target == 0.5
    assert result.layers["fc1"].sparsity == pytest.approx(0.5)
    assert result.warnings == ()
    assert result.to_dict()["pruner"] == "l1norm"
