"""Tiny third-party model families (transformers, timm) with random weights, shared by the family tests.

Each builder returns a :data:`Family`: the model, an example input and the name of its head (the layer a
config leaves whole). Seed the global generator before calling: the weights come from it, the inputs from
their own generators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Family = tuple[nn.Module, torch.Tensor, str]


def built(make: Callable[[], Family], prepare: Callable[[nn.Module], None] | None = None) -> Family:
    """The family ``make`` builds from seed 0, passed to ``prepare``, on eager attention, in eval mode.

    Returns:
        The model, its example input and its head's name.
    """
    torch.manual_seed(0)
    model, x, head = make()
    if prepare is not None:
        prepare(model)
    if hasattr(model, "config"):  # transformers' models: the attention the engine traces
        model.config._attn_implementation = "eager"
    return model.eval(), x, head


def tokens(vocab_size: int) -> torch.Tensor:
    """Eight token ids in ``[1, vocab_size)``, the same on every call."""
    return torch.randint(1, vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))


def image(size: int) -> torch.Tensor:
    """One 3×size×size image, the same on every call."""
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def half_but_head(head: str) -> list[dict[str, Any]]:
    """Half of every Conv2d, Linear and Conv1D, the head left whole."""
    return [
        {"sparsity_per_layer": 0.5, "op_types": ["Conv2d", "Linear", "Conv1D"]},
        {"exclude": True, "op_names": [head]},
    ]


def bert(vocab_size: int) -> Family:
    """A 2-layer BERT classifier, hidden 32, 4 heads."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, num_labels=3,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config), tokens(vocab_size), "classifier"


def gpt2(vocab_size: int) -> Family:
    """A 2-layer GPT-2 classifier, embedding 32, 4 heads (its Conv1D layers)."""
    import transformers

    config = transformers.GPT2Config(
        vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=64, num_labels=3,
        pad_token_id=0, bos_token_id=1, eos_token_id=1,
    )  # fmt: skip
    return transformers.GPT2ForSequenceClassification(config), tokens(vocab_size), "score"


def hf_vit() -> Family:
    """A 2-layer ViT classifier of 32×32 images in 8×8 patches."""
    import transformers

    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=3,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config), image(32), "classifier"


def llama(vocab_size: int, key_value_heads: int = 4) -> Family:
    """A 2-layer Llama language model, hidden 32, 4 query heads (fewer key/value heads: grouped-query)."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=key_value_heads, intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config), tokens(vocab_size), "lm_head"


def timm_vit() -> Family:
    """timm's vit_tiny cut to 2 blocks of width 64 (fused qkv) on 32×32 images."""
    import timm

    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=64, num_heads=4,
        depth=2, num_classes=5,
    )  # fmt: skip
    return model, image(32), "head"
