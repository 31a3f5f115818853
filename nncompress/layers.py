"""Library layers Torch-Pruning has no handler for, and what a traced model returns.

Read by the one channel graph (:mod:`nncompress.graph`), which pruners, preflight and the speedup share.

* transformers' ``Conv1D`` (GPT-2's ``c_attn``, ``c_proj``, ``c_fc``) is a Linear whose weight is
  stored transposed, ``(in, out)``. Unregistered, Torch-Pruning would treat it as an element-wise op
  and pass channels straight through it. It is recognised by duck typing (class name, ``nf`` and a
  2-D weight) so the engine does not import transformers.
* a transformers model traced with its generation cache on concatenates key/value states onto an
  empty cache, a concat the tracer cannot size: tracing runs with ``config.use_cache = False``.
* a model output may hold non-tensors (transformers' ``Cache`` objects, ``None`` fields); the
  tracer only needs the tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch_pruning as tp
from torch import nn

from nncompress.grouped import grouped_conv_pruners
from nncompress.norms import norm_pruners

__all__ = [
    "Conv1DPruner",
    "FusedAttention",
    "RMSNormPruner",
    "conv1d_types",
    "fused_attentions",
    "grouped_query_projections",
    "head_size",
    "is_conv1d",
    "is_rms_norm",
    "library_pruners",
    "out_width",
    "output_tensors",
    "rms_norm_types",
    "traced_outputs",
    "without_cache",
]


def is_conv1d(module: nn.Module) -> bool:
    """True for a transformers-style ``Conv1D``: ``y = x @ weight + bias`` with ``weight`` (in, out)."""
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(weight, torch.Tensor)
        and weight.dim() == 2
        and getattr(module, "nf", None) == weight.shape[1]
    )


def conv1d_types(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The Conv1D classes used in ``model`` (usually none, or transformers' one)."""
    return tuple(dict.fromkeys(type(m) for m in model.modules() if is_conv1d(m)))


class Conv1DPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning handler for ``Conv1D``: output channels are weight columns, inputs are rows."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = _keep(int(cast(int, layer.nf)), idxs)
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 1)
        if getattr(layer, "bias", None) is not None:
            layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
        layer.nf = len(keep)  # type: ignore[assignment]  # torch types Module.__setattr__ as Tensor | Module only
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = _keep(int(cast(torch.Tensor, layer.weight).shape[0]), idxs)
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
        if hasattr(layer, "nx"):
            layer.nx = len(keep)  # type: ignore[assignment]  # torch types Module.__setattr__ as Tensor | Module only
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(cast(int, layer.nf))

    def get_in_channels(self, layer: nn.Module) -> int:
        return int(cast(torch.Tensor, layer.weight).shape[0])


def _keep(total: int, removed: Sequence[int]) -> list[int]:
    dropped = {int(i) for i in removed}
    return [i for i in range(total) if i not in dropped]


def traced_outputs(out: Any) -> list[torch.Tensor]:
    """:func:`output_tensors` for the tracer, which needs at least one tensor autograd produced.

    Raises:
        ValueError: the output holds no such tensor (plain numbers, detached tensors).
    """
    tensors = [t for t in output_tensors(out) if t.grad_fn is not None]
    if not tensors:
        raise ValueError(f"the model output ({type(out).__name__}) holds no tensor computed by autograd")
    return tensors


def output_tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of a model output, walking tuples, lists and dicts (``ModelOutput`` is one).

    Anything else (a transformers ``Cache``, ``None``) is skipped: its tensors are key/value states
    kept for generation, and treating them as outputs would make every attention projection look
    like a model output that must not be pruned.
    """
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, tuple | list):
        return [t for item in out for t in output_tensors(item)]
    if isinstance(out, dict):
        return [t for item in out.values() for t in output_tensors(item)]
    return []


@contextmanager
def without_cache(model: nn.Module) -> Iterator[None]:
    """Turns a transformers model's generation cache off for the duration (restored after)."""
    configs: list[Any] = [c for m in model.modules() if hasattr(c := getattr(m, "config", None), "use_cache")]
    saved = [c.use_cache for c in configs]
    try:
        for c in configs:
            c.use_cache = False
        yield
    finally:
        for c, value in zip(configs, saved, strict=True):
            c.use_cache = value


@dataclass(frozen=True)
class FusedAttention:
    """An attention module whose query, key and value come from one projection.

    timm's ``qkv`` and GPT-2's ``c_attn`` write ``[q | k | v]`` side by side, each ``width`` wide,
    and the output projection reads the attention result (the value layout). Torch-Pruning's index
    mapping through the split/unbind that follows is not reliable (it maps all ``3 * width`` rows
    onto GPT-2's ``c_proj``), so the channel graph describes these channels itself: channel
    ``c`` of the group is row ``c`` of each of q, k and v plus input column ``c`` of the output
    projection, and whole heads (``head_size`` channels) go together.

    Attributes:
        module: the attention module's name.
        fused: the fused projection's name.
        out: the output projection's name.
        width: query (= key = value) width, ``heads * head_size``.
        head_size: channels per head.
    """

    module: str
    fused: str
    out: str
    width: int
    head_size: int


_HEAD_SIZE = ("head_dim", "attention_head_size", "head_size", "dim_per_head")
_FUSED = ("qkv", "c_attn")
_OUT = ("proj", "c_proj", "out_proj", "o_proj")


def head_size(module: nn.Module) -> int | None:
    """The attention module's per-head size attribute, if it has one."""
    for name in _HEAD_SIZE:
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def out_width(module: nn.Module | None) -> int | None:
    """Output features of a Linear or Conv1D, else None."""
    if isinstance(module, nn.Linear):
        return int(module.out_features)
    if module is not None and is_conv1d(module):
        return int(cast(torch.Tensor, module.weight).shape[1])
    return None


def fused_attentions(model: nn.Module) -> list[FusedAttention]:
    """The fused-projection attention modules of ``model`` (timm ``Attention``, GPT-2 self-attention)."""
    found: list[FusedAttention] = []
    for name, module in model.named_modules():
        size = head_size(module)
        if size is None or getattr(module, "is_cross_attention", False):
            continue
        children = dict(module.named_children())
        fused = next((n for n in _FUSED if out_width(children.get(n)) is not None), None)
        out = next((n for n in _OUT if out_width(children.get(n)) is not None), None)
        if fused is None or out is None:
            continue
        total = out_width(children[fused])
        assert total is not None
        if total % 3 or (total // 3) % size:
            continue
        prefix = f"{name}." if name else ""
        found.append(FusedAttention(name, prefix + fused, prefix + out, total // 3, size))
    return found


def is_rms_norm(module: nn.Module) -> bool:
    """True for ``nn.RMSNorm`` and library RMSNorm layers (``LlamaRMSNorm`` ...) with a 1-D weight."""
    if isinstance(module, nn.RMSNorm):
        return module.weight is not None
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__.endswith("RMSNorm") and isinstance(weight, torch.Tensor) and weight.dim() == 1
    )


def rms_norm_types(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The RMSNorm classes used in ``model``."""
    return tuple(dict.fromkeys(type(m) for m in model.modules() if is_rms_norm(m)))


class RMSNormPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning handler for RMSNorm: its weight follows the normalised channels.

    Registered so the graph sees the norm as a layer on those channels (and the channel graph
    refuses to shrink them: the root mean square runs over all of them) instead of as a bare
    parameter multiplied in somewhere.
    """

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = _keep(int(cast(torch.Tensor, layer.weight).shape[0]), idxs)
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
        if isinstance(getattr(layer, "normalized_shape", None), tuple):
            layer.normalized_shape = (len(keep),)  # type: ignore[assignment]  # torch types Module.__setattr__ as Tensor | Module only
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(cast(torch.Tensor, layer.weight).shape[0])

    get_in_channels = get_out_channels


def library_pruners(model: nn.Module) -> dict[type[nn.Module], tp.pruner.BasePruningFunc]:
    """Torch-Pruning handlers for the library layers found in ``model`` (Conv1D, RMSNorm, norms).

    GroupNorm and FrozenBatchNorm2d handlers come from :mod:`nncompress.norms`, the grouped conv
    handler from :mod:`nncompress.grouped`.
    """
    handlers: dict[type[nn.Module], tp.pruner.BasePruningFunc] = {
        t: Conv1DPruner() for t in conv1d_types(model)
    }
    handlers.update({t: RMSNormPruner() for t in rms_norm_types(model)})
    handlers.update(norm_pruners(model))
    handlers.update(grouped_conv_pruners(model))
    return handlers


def grouped_query_projections(model: nn.Module) -> list[nn.Module]:
    """q/k/v projections of grouped-query attention (``num_key_value_groups > 1``, e.g. Llama GQA).

    Their heads are not pruned: a key/value head serves several query heads through ``repeat_kv``
    (an expand and a reshape), and Torch-Pruning's group search through it does not terminate in
    practice. The channel graph skips these layers as roots; the FFN and the rest still prune.
    """
    found: list[nn.Module] = []
    for module in model.modules():
        groups = getattr(module, "num_key_value_groups", None)
        if isinstance(groups, int) and groups > 1:
            found.extend(
                child
                for name, child in module.named_children()
                if name in ("q_proj", "k_proj", "v_proj", "query", "key", "value")
            )
    return found
