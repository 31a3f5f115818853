"""Issue 14, norm-coupled widths: GroupNorm (whole groups go, ``num_groups`` shrinks), torchvision's
FrozenBatchNorm2d (buffers follow the channels), LayerNorm/RMSNorm (the masked norm normalises over
the kept channels; ConvNeXt, transformers' hidden width). Each family: preflight → prune 50% of
Conv2d/Linear/Conv1D (head excluded) → speedup → exact against the masked model → at least 20% fewer
parameters, and preflight's promised channels equal the shrunk model's."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from torch import nn

from nncompress import preflight, prune, speedup
from nncompress.errors import SpeedupError
from nncompress.layers import is_rms_norm, out_width
from nncompress.masked_norms import attach_norm_masks, detach_norm_masks
from nncompress.norms import WholeGroupNormPruner
from nncompress.pruners import L1NormPruner
from nncompress.speedup import ModelSpeedup
from tests.nncompress import families
from tests.nncompress.families import Family, built, half_but_head, image, tokens

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")
pytest.importorskip("transformers")

_VOCAB = 50


class MiniGroupNorm(nn.Module):
    """Three GroupNorm layouts (4, 2 and 8 channels per group) and a residual add across two of them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.gn1 = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.conv2, self.gn2 = nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(8, 16)
        self.conv3, self.gn3 = nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(2, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.gn1(self.conv1(x)))
        x = x + torch.relu(self.gn2(self.conv2(x)))
        x = torch.relu(self.gn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


class MiniFrozenBN(nn.Module):
    """conv → FrozenBatchNorm2d → conv → FrozenBatchNorm2d → linear."""

    def __init__(self) -> None:
        super().__init__()
        frozen = torchvision.ops.FrozenBatchNorm2d
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), frozen(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), frozen(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def mini_group_norm() -> Family:
    return MiniGroupNorm(), image(16), "fc"


def mini_frozen_bn() -> Family:
    return MiniFrozenBN(), image(16), "fc"


def resnet18_frozen_bn() -> Family:
    model = torchvision.models.resnet18(
        weights=None, num_classes=10, norm_layer=torchvision.ops.FrozenBatchNorm2d
    )
    return model, image(32), "fc"


def timm_resnetv2_gn() -> Family:
    norm = functools.partial(timm.layers.GroupNormAct, num_groups=8)
    model = timm.create_model(
        "resnetv2_50d_gn", pretrained=False, num_classes=10, layers=[1, 1, 1, 1],
        channels=(64, 128, 128, 256), stem_chs=32, norm_layer=norm,
    )  # fmt: skip
    return model, image(32), "head.fc"


class MiniLayerNorm(nn.Module):
    """A residual stream: embedding → LayerNorm → (+ FFN) → LayerNorm → head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.ln0 = nn.Embedding(50, 16), nn.LayerNorm(16)
        self.fc1, self.fc2, self.ln1 = nn.Linear(16, 32), nn.Linear(32, 16), nn.LayerNorm(16)
        self.head = nn.Linear(16, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.ln0(self.emb(tokens))
        h = self.ln1(h + self.fc2(torch.relu(self.fc1(h))))
        return self.head(h.mean(1))


def mini_layer_norm() -> Family:
    return MiniLayerNorm(), tokens(_VOCAB), "head"


def torchvision_convnext() -> Family:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    blocks = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]
    return ConvNeXt(blocks, num_classes=10), image(32), "classifier.2"


def timm_convnext_atto() -> Family:
    return timm.create_model("convnext_atto", pretrained=False, num_classes=10), image(64), "head.fc"


FAMILIES: dict[str, Callable[[], Family]] = {
    "mini_group_norm": mini_group_norm,
    "mini_frozen_bn": mini_frozen_bn,
    "resnet18_frozen_bn": resnet18_frozen_bn,
    "timm_resnetv2_gn": timm_resnetv2_gn,
    "mini_layer_norm": mini_layer_norm,
    "torchvision_convnext": torchvision_convnext,
    "timm_convnext_atto": timm_convnext_atto,
    "bert": functools.partial(families.bert, _VOCAB),
    "gpt2": functools.partial(families.gpt2, _VOCAB),
    "hf_vit": families.hf_vit,
    "timm_vit": families.timm_vit,
    "llama": functools.partial(families.llama, _VOCAB),
}
# The residual stream's width: the layer whose output channels carry it, and its size before.
HIDDEN: dict[str, tuple[str, int]] = {
    "mini_layer_norm": ("emb", 16),
    "torchvision_convnext": ("features.0.0", 16),
    "timm_convnext_atto": ("stem.0", 40),
    "bert": ("bert.embeddings.word_embeddings", 32),
    "gpt2": ("transformer.wte", 32),
    "hf_vit": ("vit.embeddings.patch_embeddings.projection", 32),
    "timm_vit": ("patch_embed.proj", 64),
    "llama": ("model.embed_tokens", 32),
}


@torch.no_grad()
def _randomise_norms(model: nn.Module) -> None:
    # Non-trivial affine parameters and statistics, so a wrong channel or group would show.
    for module in model.modules():
        if isinstance(module, nn.GroupNorm | nn.LayerNorm) and module.weight is not None:
            nn.init.normal_(module.weight)
            if module.bias is not None:
                nn.init.normal_(module.bias)
        elif is_rms_norm(module):
            nn.init.normal_(module.weight)
        elif isinstance(module, torchvision.ops.FrozenBatchNorm2d):
            module.weight.normal_()
            module.bias.normal_()
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)


def _build(name: str) -> Family:
    return built(FAMILIES[name], _randomise_norms)


def _out_channels(module: nn.Module) -> int:
    width = out_width(module)
    if width is not None:
        return width
    return int(getattr(module, "out_channels", getattr(module, "embedding_dim", -1)))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_norm_family_prunes_exactly(name: str) -> None:
    model, x, head = _build(name)
    config = half_but_head(head)

    report = preflight(model, config, x)
    result = prune(model, config, pruner="l1norm", example_inputs=x)
    shrunk = speedup(model, result.masks, x)

    assert shrunk.verification is not None and shrunk.verification.passed
    assert shrunk.params_after <= 0.8 * shrunk.params_before, (shrunk.params_before, shrunk.params_after)
    assert report.will_shrink and shrunk.smaller
    modules = dict(shrunk.model.named_modules())
    promised = {r.name: r.channels_after for r in report.layers if r.channels_after is not None}
    assert promised
    for layer, after in promised.items():
        assert _out_channels(modules[layer]) == after, f"preflight promised {layer} → {after}"
    if name in HIDDEN:
        layer, before = HIDDEN[name]
        assert _out_channels(modules[layer]) < before, (
            f"the hidden width ({layer}) kept all {before} channels"
        )
    for norm_name, norm in modules.items():
        if isinstance(norm, nn.GroupNorm):
            assert norm.num_channels == norm.weight.shape[0]
            assert norm.num_channels % norm.num_groups == 0
        elif isinstance(norm, torchvision.ops.FrozenBatchNorm2d):
            shapes = {
                tuple(getattr(norm, b).shape) for b in ("weight", "bias", "running_mean", "running_var")
            }
            assert len(shapes) == 1, f"{norm_name}: buffers of different sizes {shapes}"


def test_group_norm_loses_whole_groups_and_its_group_count() -> None:
    model, x, head = _build("mini_group_norm")
    result = prune(model, half_but_head(head), pruner="l1norm", example_inputs=x)
    shrunk = speedup(model, result.masks, x).model
    # 16 channels at 50%: 8 remain, in whole groups of the original group size.
    assert [(m.num_groups, m.num_channels) for m in (shrunk.gn1, shrunk.gn2, shrunk.gn3)] == [
        (2, 8),
        (4, 8),
        (1, 8),
    ]
    # The residual add ties gn1 and gn2 (groups of 4 and 2): blocks of 4 keep both whole.
    mask = result.masks["conv1"]["weight"].flatten(1).any(1)
    assert mask.reshape(-1, 4).all(1).sum() == 2 and mask.sum() == 8


def test_partial_group_removal_is_refused() -> None:
    norm = nn.GroupNorm(4, 16)
    with pytest.raises(SpeedupError, match="whole groups"):
        WholeGroupNormPruner().prune_out_channels(norm, [0, 1])
    WholeGroupNormPruner().prune_out_channels(norm, [4, 5, 6, 7])
    assert (norm.num_groups, norm.num_channels, norm.weight.shape[0]) == (3, 12, 12)


def test_frozen_batch_norm_buffers_through_the_nni_api() -> None:
    model, x, head = _build("mini_frozen_bn")
    pruner = L1NormPruner(model, half_but_head(head), dummy_input=x)
    _, masks = pruner.compress()
    assert set(masks["bn1"]) == {"weight", "bias"}
    with torch.no_grad():
        masked = model(x)
    # speedup() straight from the still-wrapped model: the buffers stay buffers.
    result = speedup(model, masks, x)
    assert not list(result.model.bn1.parameters()) and result.model.bn1.weight.shape == (8,)
    pruner.unwrap_model()
    ModelSpeedup(model, x, masks).speedup_model()
    assert model.bn1.running_var.shape == (8,) and model.conv2.in_channels == 8
    with torch.no_grad():
        torch.testing.assert_close(model(x), masked, rtol=1e-4, atol=1e-5)


def test_masked_layer_norm_normalises_over_the_kept_channels() -> None:
    torch.manual_seed(0)
    norm, x = nn.LayerNorm(8), torch.randn(3, 8)
    mask = torch.tensor([1.0, 0, 1, 1, 0, 1, 1, 0])
    kept = mask.bool()
    attach_norm_masks(norm, {"": {"weight": mask, "bias": mask}})
    with torch.no_grad():
        norm.weight.mul_(mask)
        norm.bias.mul_(mask)
        y = norm(x)
    expected = torch.nn.functional.layer_norm(x[:, kept], (5,), norm.weight[kept], norm.bias[kept])
    torch.testing.assert_close(y[:, kept], expected)
    assert not y[:, ~kept].any()
    detach_norm_masks(norm)
    assert not norm._forward_hooks
