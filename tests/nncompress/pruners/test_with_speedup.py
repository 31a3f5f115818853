"""The masks of every pruner are realisable: the speedup shrinks the model and verifies equivalence."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from nncompress.models import registry
from nncompress.pruners import PRUNERS, prune
from nncompress.speedup import speedup
from tests.nncompress.pruners.factories import learnable_images, tiny_resnet


def _options(name: str, data: Any) -> dict[str, Any]:
    return (
        {} if name in ("level", "l1norm", "l2norm", "fpgm") else {"data": data, "criterion": F.cross_entropy}
    )


@pytest.mark.parametrize("name", [n for n in PRUNERS if n != "level"])
def test_residual_cnn_masks_speed_up_to_an_equivalent_smaller_model(name: str) -> None:
    model = tiny_resnet()
    x = torch.randn(2, 3, 8, 8)
    config = (
        [{"sparsity": 0.5, "op_types": ["BatchNorm2d"]}]
        if name == "slim"
        else [{"sparsity": 0.5, "op_types": ["Conv2d"]}]
    )
    result = prune(model, config, pruner=name, example_inputs=x, **_options(name, learnable_images()))
    shrunk = speedup(model, result.masks, x)  # raises VerificationError if outputs differ
    assert shrunk.model.stem.out_channels == 4 and shrunk.model.c1.out_channels == 8
    assert sum(p.numel() for p in shrunk.model.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["l1norm", "taylorfo"])
def test_transformer_heads_pruned_by_the_pruner_speed_up_exactly(name: str) -> None:
    arch = registry.get("transformer_classifier")
    torch.manual_seed(0)
    model = arch.build().eval()
    x = arch.example_input(2)
    data = [(arch.example_input(4), torch.randint(0, 4, (4,))) for _ in range(2)]
    config = [{"sparsity": 0.5, "op_types": ["Linear", "Embedding"]}]
    result = prune(model, config, pruner=name, example_inputs=x, **_options(name, data))
    shrunk = speedup(model, result.masks, x)
    assert shrunk.model.layers[0].attn.q.out_features == 32  # two of four heads of 16
