"""Keeps attention modules' head bookkeeping in step with their pruned projections.

Library attention layers read their head count from attributes set in ``__init__``: timm's
``qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)``, GPT-2's
``c_attn(x).split(self.split_size, dim=2)``, BERT's ``all_head_size``. Once whole heads are gone
from the query/key/value projections those attributes are stale and the forward fails (or, worse,
mixes heads). After pruning, each attention module's head count and attention width are recomputed
from its query projection and its (unchanged) head size.

Modules are recognised by duck typing, so the engine needs neither timm nor transformers: a module
with a head-size attribute and a query projection (a fused ``qkv``/``c_attn`` or a separate
``query``/``q_proj``/``q_lin``/``q``).
"""

from __future__ import annotations

from torch import nn

from nncompress.layers import head_size, out_width
from nncompress.speedup.reshape import Rewrite

__all__ = ["sync_attention_heads"]

_HEAD_COUNT = ("num_heads", "num_attention_heads", "n_heads", "n_head")
# Attributes holding heads * head_size (the attention width), read by the forward to reshape back.
_WIDTH = ("all_head_size", "attn_dim", "split_size", "inner_dim")
_FUSED = ("qkv", "c_attn")
_QUERY = ("query", "q_proj", "q_lin", "q")
_KEY = ("key", "k_proj", "k_lin", "k")


def _query_width(module: nn.Module) -> int | None:
    """Width of the queries: a fused projection holds query, key and value side by side."""
    children = dict(module.named_children())
    for name in _FUSED:
        width = out_width(children.get(name))
        if width is not None and not getattr(module, "is_cross_attention", False):
            return width // 3 if width % 3 == 0 else None
    for name in _QUERY:
        width = out_width(children.get(name))
        if width is not None:
            return width
    return None


def _int_attr(module: nn.Module, names: tuple[str, ...]) -> tuple[str, int] | None:
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return name, value
    return None


def sync_attention_heads(model: nn.Module) -> list[Rewrite]:
    """Sets each attention module's head count and width attributes from its pruned projections.

    Args:
        model: a pruned model (modified in place).

    Returns:
        One :class:`Rewrite` per changed attribute (``node`` is the module name), empty when no
        attention module lost heads.

    Example:
        >>> sync_attention_heads(vit)  # after its qkv lost one of three heads
        [Rewrite(node='blocks.0.attn', before='num_heads=3', after='num_heads=2'), ...]
    """
    changes: list[Rewrite] = []
    for name, module in model.named_modules():
        size = head_size(module)
        width = _query_width(module)
        if size is None or width is None or width % size:
            continue
        heads = width // size
        updates: dict[str, int] = {}
        count = _int_attr(module, _HEAD_COUNT)
        if count is not None:
            updates[count[0]] = heads
        for attr in _WIDTH:
            if _int_attr(module, (attr,)) is not None:
                updates[attr] = width
        key = next((c for n, c in module.named_children() if n in _KEY), None)
        key_width = out_width(key)
        kv = _int_attr(module, ("num_key_value_heads",))
        if key_width is not None and kv is not None and key_width % size == 0:
            updates[kv[0]] = key_width // size
        for attr, value in updates.items():
            old = getattr(module, attr)
            if old != value:
                setattr(module, attr, value)
                changes.append(Rewrite(name, f"{attr}={old}", f"{attr}={value}"))
    return changes
