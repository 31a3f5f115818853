"""Issue 2, item 5, as a user runs it: for every built-in architecture, preflight → prune at 50% →
speedup → verified equivalence → fewer parameters; and preflight's promise (channels after) is what
the shrunk model really has."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nncompress import preflight, prune, speedup
from nncompress.models import get, names

CONFIG = [{"sparsity_per_layer": 0.5, "op_types": ["Conv2d", "Linear", "Embedding"]}]


def _out_channels(module: nn.Module) -> int | None:
    for attr in ("out_channels", "out_features", "embedding_dim", "num_features"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    return None


@pytest.mark.parametrize("name", names())
def test_preflight_prune_speedup_verify(name: str) -> None:
    arch = get(name)
    torch.manual_seed(0)
    model = arch.build().eval()
    x = arch.example_input(1, generator=torch.Generator().manual_seed(0))
    state = {k: v.clone() for k, v in model.state_dict().items()}

    report = preflight(model, CONFIG, x)
    result = prune(model, CONFIG, pruner="l1norm", example_inputs=x)
    shrunk = speedup(model, result.masks, x)

    assert shrunk.verification is not None and shrunk.verification.passed
    assert shrunk.params_after < shrunk.params_before
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), "input model changed"
    modules = dict(shrunk.model.named_modules())
    promised = {
        layer.name: layer.channels_after for layer in report.layers if layer.channels_after is not None
    }
    assert promised, "preflight selected no layer"
    for layer_name, channels_after in promised.items():
        actual = _out_channels(modules[layer_name])
        assert actual == channels_after, (
            f"{name}: preflight promised {layer_name} → {channels_after}, got {actual}"
        )
    # The shrunk model serves another batch size.
    out = shrunk.model(arch.example_input(3))
    assert out.shape[0] == 3
