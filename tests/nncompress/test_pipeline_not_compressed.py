"""A job that cannot shrink the model fails, naming the layers that block it, instead of succeeding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nncompress.errors import ConfigError, NotCompressedError
from nncompress.pipeline import JobSpec, run_job
from nncompress.pipeline.steps.compress import require_smaller
from nncompress.speedup import speedup


class _Normed(nn.Module):
    """Its only prunable layer feeds an affine-free LayerNorm over the channels (nothing to mask, so
    the norm always reads all of them), which blocks the group."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16, elementwise_affine=False)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.fc1(x)))


def test_a_config_whose_layers_are_all_blocked_is_refused_naming_the_reason(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = JobSpec.from_dict(
        {
            "pruner": "l1norm",
            "config_list": [{"sparsity_per_layer": 0.5, "op_names": ["fc1"]}],
            "input_shape": [1, 8],
            "latency_runs": 1,
            "latency_batch_sizes": [1],
        }
    )
    with pytest.raises(ConfigError, match=r"fc1: not prunable \(norm: LayerNorm"):
        run_job(spec, model=_Normed().eval(), architecture=None, out_dir=tmp_path)


def test_masks_that_speedup_cannot_apply_are_not_a_success() -> None:
    """Hand-made masks on the blocked layer (as a mask file from elsewhere would be): speedup keeps every
    channel, and the pipeline's check turns that into not_compressed naming the blocker."""
    torch.manual_seed(0)
    model = _Normed().eval()
    mask = torch.ones(16, 8)
    mask[:8] = 0
    masks = {"fc1": {"weight": mask, "bias": mask[:, 0].clone()}}
    sped = speedup(model, masks, torch.randn(2, 8), verify=False)
    assert not sped.smaller and sped.blocked_by
    with pytest.raises(NotCompressedError, match="no smaller") as info:
        require_smaller(sped)
    assert info.value.code == "not_compressed" and "fc1" in info.value.message
