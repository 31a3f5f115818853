"""Issue 14: third-party architectures (transformers, timm) built from tiny configs with random weights:
preflight → prune 50% of Conv2d/Linear/Conv1D (head excluded) → speedup → verified exact → at least 20%
fewer parameters, whole attention heads gone with the modules' head counts updated, and preflight's
promised channels equal to the shrunk model's."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from torch import nn

from nncompress import preflight, prune, speedup
from nncompress.layers import fused_attentions, head_size, out_width
from tests.nncompress import families
from tests.nncompress.families import Family, built, half_but_head, tokens

transformers = pytest.importorskip("transformers")
pytest.importorskip("timm")

_VOCAB = 100


def distilbert() -> Family:
    config = transformers.DistilBertConfig(
        vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64, num_labels=3
    )
    return transformers.DistilBertForSequenceClassification(config), tokens(_VOCAB), "classifier"


FAMILIES: dict[str, Callable[[], Family]] = {
    "bert": functools.partial(families.bert, _VOCAB),
    "distilbert": distilbert,
    "hf_vit": families.hf_vit,
    "gpt2": functools.partial(families.gpt2, _VOCAB),
    "llama": functools.partial(families.llama, _VOCAB),
    "timm_vit": families.timm_vit,
}


def _build(name: str) -> Family:
    return built(FAMILIES[name])


def _out_channels(module: nn.Module) -> int | None:
    width = out_width(module)
    if width is not None:
        return width
    for attr in ("out_channels", "embedding_dim", "num_features"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    return None


def _heads(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Attention module -> (head count attribute, heads implied by its query width)."""
    found = {}
    for name, module in model.named_modules():
        size = head_size(module)
        counts = ("num_heads", "num_attention_heads", "n_heads")
        count = next((getattr(module, a) for a in counts if hasattr(module, a)), None)
        children = dict(module.named_children())
        fused = next((children[n] for n in ("qkv", "c_attn") if n in children), None)
        query = next((children[n] for n in ("query", "q_proj", "q_lin") if n in children), None)
        width = out_width(fused) // 3 if fused is not None else out_width(query)  # type: ignore[operator]
        if size is not None and width is not None:
            # Llama's attention keeps no head count: its forward reshapes with -1.
            found[name] = (count if isinstance(count, int) else width // size, width // size)
    return found


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_prunes_heads_and_ffn_exactly(name: str) -> None:
    model, x, head = _build(name)
    config = half_but_head(head)
    heads_before = _heads(model)

    report = preflight(model, config, x)
    result = prune(model, config, pruner="l1norm", example_inputs=x)
    shrunk = speedup(model, result.masks, x)

    assert shrunk.verification is not None and shrunk.verification.passed
    assert shrunk.params_after <= 0.8 * shrunk.params_before, (shrunk.params_before, shrunk.params_after)
    heads_after = _heads(shrunk.model)
    assert heads_before and set(heads_after) == set(heads_before)
    for module, (count, implied) in heads_after.items():
        assert count == implied, f"{module}: head count attribute {count}, projections hold {implied} heads"
        assert count < heads_before[module][0], f"{module} kept all its heads"
    modules = dict(shrunk.model.named_modules())
    promised = {r.name: r.channels_after for r in report.layers if r.channels_after is not None}
    assert promised
    for layer, after in promised.items():
        assert _out_channels(modules[layer]) == after, f"preflight promised {layer} → {after}"


def test_fused_attention_is_recognised() -> None:
    model, _, _ = _build("timm_vit")
    found = fused_attentions(model)
    assert [(f.fused, f.out, f.width, f.head_size) for f in found] == [
        (f"blocks.{i}.attn.qkv", f"blocks.{i}.attn.proj", 64, 16) for i in range(2)
    ]


def test_gpt2_conv1d_is_pruned_and_shrunk_model_takes_other_lengths() -> None:
    model, x, head = _build("gpt2")
    result = prune(model, half_but_head(head), pruner="l1norm", example_inputs=x)
    shrunk = speedup(model, result.masks, x)
    attn = shrunk.model.transformer.h[0].attn
    # The hidden width (embeddings, residual outputs, LayerNorms) halves too: 32 -> 16 rows.
    assert attn.c_attn.weight.shape == (16, 48) and attn.split_size == 16
    assert attn.c_proj.weight.shape == (16, 16)
    assert shrunk.model.transformer.h[0].mlp.c_fc.weight.shape == (16, 64)
    longer = torch.randint(1, 100, (2, 12))
    with torch.no_grad():
        assert shrunk.model(longer).logits.shape == (2, 3)


def test_grouped_query_attention_keeps_its_heads_and_prunes_the_ffn() -> None:
    torch.manual_seed(0)
    model, x, _ = families.llama(_VOCAB, key_value_heads=2)
    model.eval()
    model.config._attn_implementation = "eager"
    report = preflight(model, half_but_head("lm_head"), x)
    result = prune(model, half_but_head("lm_head"), pruner="l1norm", example_inputs=x)
    shrunk = speedup(model, result.masks, x)

    assert shrunk.verification is not None and shrunk.verification.passed and shrunk.smaller
    layer = shrunk.model.model.layers[0]
    assert (layer.self_attn.q_proj.out_features, layer.self_attn.k_proj.out_features) == (32, 16)
    assert layer.mlp.gate_proj.out_features == layer.mlp.up_proj.out_features == 32
    assert report.layer("model.layers.0.self_attn.q_proj").channels_after == 32
    assert report.layer("model.layers.0.mlp.up_proj").channels_after == 32
