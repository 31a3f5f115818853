"""Issue item 6: the seed's Net, its config_list and L1NormPruner give the documented shapes, and the
shrunk model runs although its forward hard-codes ``x.view(-1, 4 * 4 * 50)``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import fx, nn

from nncompress.models.mnist import Net
from nncompress.speedup import ModelSpeedup, apply_kept_indices, speedup
from tests.nncompress.speedup.masking import l1_channel_masks

SEED_CONFIG = [
    {"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]},
    {"exclude": True, "op_names": ["fc2"]},
]


def _seed_masks(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    try:
        from nncompress.pruners import L1NormPruner
    except ImportError:  # the pruners package is optional for this test; the helper picks the same channels
        return l1_channel_masks(model, x, 0.5)
    _, masks = L1NormPruner(model, SEED_CONFIG, dummy_input=x).compress()
    return masks


def _layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    modules = dict(model.named_modules())
    conv1, conv2, fc1, fc2 = (modules[n] for n in ("conv1", "conv2", "fc1", "fc2"))
    return {
        "conv1": (conv1.in_channels, conv1.out_channels),
        "conv2": (conv2.in_channels, conv2.out_channels),
        "fc1": (fc1.in_features, fc1.out_features),
        "fc2": (fc2.in_features, fc2.out_features),
    }


@pytest.fixture
def seed() -> tuple[Net, torch.Tensor]:
    torch.manual_seed(0)
    return Net().eval(), torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_seed_reproduction_shapes_params_and_runs(seed: tuple[Net, torch.Tensor]) -> None:
    model, x = seed
    masks = _seed_masks(model, x)

    result = speedup(model, masks, x)

    assert _layers(result.model) == {"conv1": (1, 10), "conv2": (10, 25), "fc1": (400, 250), "fc2": (250, 10)}
    assert (result.params_before, result.params_after) == (431_080, 109_295)
    # The hard-coded view was rewritten to follow the runtime sizes, so the model runs at any batch size.
    assert result.graph_rewritten and isinstance(result.model, fx.GraphModule)
    assert [r.before for r in result.rewrites] == ["view(-1, 800)"]
    assert "x.size(1) * x.size(2) * x.size(3)" in result.rewrites[0].after
    with torch.inference_mode():
        out = result.model(torch.randn(7, 1, 28, 28))
    assert out.shape == (7, 10)
    assert result.verification is not None and result.verification.max_rel_diff < 1e-5
    assert (
        result.kept["conv2"]["out"] == sorted(result.kept["conv2"]["out"])
        and len(result.kept["conv2"]["out"]) == 25
    )
    assert len(result.kept["fc1"]["in"]) == 400  # 25 channels x 4 x 4 positions
    assert result.shape_changes["fc1"]["weight"] == ((500, 800), (250, 400))


def test_nni_model_speedup_accepts_a_masks_file(seed: tuple[Net, torch.Tensor], tmp_path: Path) -> None:
    model, x = seed
    path = tmp_path / "masks.pth"
    torch.save(_seed_masks(model, x), path)

    shrunk = ModelSpeedup(model, x, str(path)).speedup_model()

    assert _layers(shrunk)["fc1"] == (400, 250)
    assert sum(p.numel() for p in shrunk.parameters()) == 109_295
    assert shrunk(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_replaying_kept_indices_on_a_fresh_net_reruns_the_rewrite(seed: tuple[Net, torch.Tensor]) -> None:
    model, x = seed
    result = speedup(model, _seed_masks(model, x), x)

    fresh = apply_kept_indices(Net(), result.kept, x)
    fresh.load_state_dict(result.model.state_dict())

    assert isinstance(fresh, fx.GraphModule)
    assert _layers(fresh) == _layers(result.model)
    batch = torch.randn(4, 1, 28, 28)
    with torch.inference_mode():
        torch.testing.assert_close(fresh.eval()(batch), result.model(batch))


def test_top_level_names_work_like_nni(seed: tuple[Net, torch.Tensor]) -> None:
    import nncompress
    from nncompress import ModelSpeedup as TopLevelModelSpeedup
    from nncompress import speedup as top_level_speedup

    model, x = seed
    masks = _seed_masks(model, x)
    assert TopLevelModelSpeedup is ModelSpeedup
    # Importing the package binds it to nncompress.speedup; the package itself is callable for that reason.
    assert top_level_speedup(model, masks, x).params_after == 109_295  # type: ignore[operator]
    assert nncompress.speedup(model, masks, x).params_after == 109_295  # type: ignore[operator]
    # Speeding up a model whose masks are still attached leaves that model usable.
    assert model.conv1.weight.shape == (20, 1, 5, 5)
