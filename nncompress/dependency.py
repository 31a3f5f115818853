"""Which output channels of a model are coupled: a typed layer over Torch-Pruning's DependencyGraph.

Pruning one output channel of a conv is only meaningful together with everything that reads or
carries that channel: its bias, the BatchNorm after it, a depthwise conv that follows, the other
convs whose outputs are added to it in a residual block, and the input columns of the next layer.
Torch-Pruning traces the model with autograd and records these couplings as *groups*; this module
turns its groups into plain, frozen data keyed by module and parameter names, so that pruners (which
write masks) and the speedup (which shrinks tensors, possibly in another process) agree on them.

Vocabulary:

* a **root** is a layer whose output channels a config can select: a (non-depthwise) conv, a
  linear, an embedding or a multi-head attention;
* a **member** is a parameter slice that belongs to a channel and is removed with it (the root's
  weight rows and bias, norm affine parameters, depthwise conv filters, ...);
* a **consumer** is a parameter slice that *reads* the channel (the next layer's input columns);
  masking it is never needed because the channel it reads is already zero.

Example:
    >>> from nncompress.models.mnist import Net
    >>> groups = channel_groups(Net(), torch.randn(1, 1, 28, 28))
    >>> [(g.roots, g.channels, g.prunable) for g in groups]
    [(('conv1',), 20, True), (('conv2',), 50, True), (('fc1',), 500, True), (('fc2',), 10, False)]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from nncompress.errors import UnsupportedModelError
from nncompress.grouped import grouped_segments
from nncompress.layers import (
    FusedAttention,
    conv1d_types,
    fused_attentions,
    grouped_query_projections,
    is_conv1d,
    is_rms_norm,
    library_pruners,
    traced_outputs,
    without_cache,
)
from nncompress.masked_norms import is_width_norm
from nncompress.norms import FROZEN_BN_BUFFERS, group_norm_block, is_frozen_batch_norm
from nncompress.speedup.ghost import SELF_CONCAT_REASON, is_self_concat_node, mark_self_concats
from nncompress.speedup.recurrent import opaque_recurrent
from nncompress.speedup.shuffle import SHUFFLE_REASON, cut_shuffles, is_shuffle_node, opaque_shuffles
from nncompress.speedup.window_attention import (
    WINDOW_ATTENTION_REASON,
    is_window_attention,
    is_window_attention_node,
    opaque_window_attention,
)

__all__ = [
    "ChannelGroup",
    "ChannelSlice",
    "UnsupportedOp",
    "build_graph",
    "channel_groups",
    "unsupported_ops",
]

ExampleInputs = torch.Tensor | Sequence[Any] | dict[str, Any]

# Layer types whose output channels a config may select.
_ROOT_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.Embedding,
    nn.MultiheadAttention,
)
_RECURRENT_TYPES: tuple[type[nn.Module], ...] = (nn.RNN, nn.LSTM, nn.GRU)
_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
)


@dataclass(frozen=True)
class ChannelSlice:
    """The part of one parameter that belongs to (or reads) the channels of a group.

    Attributes:
        module: qualified module name owning the parameter, e.g. ``"layer1.0.bn1"``.
        param: parameter name on that module, e.g. ``"weight"``.
        dim: the dimension the channels run along (0 for conv/linear out, 1 for their input).
        index: positions along ``dim``.
        channel: for each position, the group channel (``0 .. channels-1``) it belongs to. A linear
            after a flatten reads several positions per channel; an attention's ``in_proj_weight``
            holds three (query, key, value).
    """

    module: str
    param: str
    dim: int
    index: tuple[int, ...]
    channel: tuple[int, ...]

    def positions(self, channels: Iterable[int]) -> list[int]:
        """Returns the positions along ``dim`` that belong to any of ``channels``."""
        wanted = set(channels)
        return [i for i, c in zip(self.index, self.channel, strict=True) if c in wanted]


@dataclass(frozen=True)
class ChannelGroup:
    """A set of output channels that must be kept or removed together.

    Attributes:
        roots: prunable layers whose output channels are these channels, in model order.
        members: every parameter slice removed with a channel (roots' own weights included).
        consumers: parameter slices whose *input* channels follow the group.
        channels: number of channels in the group.
        feeds_output: the channels reach the model output directly (a classifier's logits); such a
            group must never be pruned.
        blockers: layers that make the group unprunable (recurrent hidden units, grouped convs),
            with the reason, as ``"name: reason"``.
        block: channels must be removed in whole contiguous blocks of this size, because a reshape
            splits them (e.g. ``(batch, tokens, heads * head_dim) -> (..., heads, head_dim)``: only
            whole attention heads can go, or the head reshape would mix channels of different heads).
        segments: the channels form this many equal contiguous segments (the groups of a grouped
            conv that produces or reads them); each segment loses the same number of channels
            (see :mod:`nncompress.grouped`).
    """

    roots: tuple[str, ...]
    members: tuple[ChannelSlice, ...]
    consumers: tuple[ChannelSlice, ...]
    channels: int
    feeds_output: bool = False
    blockers: tuple[str, ...] = ()
    block: int = 1
    segments: int = 1

    @property
    def prunable(self) -> bool:
        """True when removing channels of this group is allowed at all."""
        return bool(self.roots) and not self.feeds_output and not self.blockers

    def member_slices(self, module: str) -> list[ChannelSlice]:
        """Returns the member slices that live on ``module``."""
        return [s for s in self.members if s.module == module]

    def root_slice(self, root: str) -> ChannelSlice:
        """Returns the slice whose rows define ``root``'s output channels (its weight's out dim).

        Raises:
            KeyError: ``root`` is not a root of this group.
        """
        # A multi-head attention's output channels are the rows of its out_proj.
        for owner in (root, f"{root}.out_proj"):
            for s in self.members:
                if s.module == owner and s.param == "weight":
                    return s
        # A recurrent layer's channels are hidden units: its first member (weight_ih_l0's gate rows).
        for s in self.members:
            if s.module == root:
                return s
        raise KeyError(f"{root!r} is not a root of this group (roots: {', '.join(self.roots)})")


@dataclass(frozen=True)
class UnsupportedOp:
    """Something in the model that channel pruning cannot go through.

    Attributes:
        name: qualified module name.
        op_type: the module's class name.
        reason: what happens to the channels around it and what the user can do.
    """

    name: str
    op_type: str
    reason: str


class _RecurrentInputPruner(tp.pruner.BasePruningFunc):
    """Lets a recurrent layer *consume* pruned features without ever pruning its hidden units.

    Torch-Pruning has no GRU/RNN pruner (it treats them as element-wise ops and fails inside the
    index mapping), and its LSTM pruner only handles one layer. Hidden units are therefore a barrier:
    ``get_out_channels`` is ``None`` so no group is rooted there, and input pruning only slices the
    first layer's input weights.
    """

    TARGET_MODULES = _RECURRENT_TYPES

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        raise UnsupportedModelError(
            f"the hidden units of {type(layer).__name__} cannot be pruned; exclude the layers whose "
            "channels are added to its output",
            op_type=type(layer).__name__,
        )

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.input_size)) - set(idxs))  # type: ignore[arg-type]
        for suffix in ("", "_reverse") if layer.bidirectional else ("",):
            name = f"weight_ih_l0{suffix}"
            setattr(layer, name, self._prune_parameter_and_grad(getattr(layer, name), keep, 1))
        layer.input_size = len(keep)  # type: ignore[assignment]
        layer._init_flat_weights()  # type: ignore[operator]
        return layer

    def get_out_channels(self, layer: nn.Module) -> int | None:
        return None

    def get_in_channels(self, layer: nn.Module) -> int:
        return int(layer.input_size)  # type: ignore[arg-type]


@contextmanager
def _preserve_mode(model: nn.Module) -> Iterator[None]:
    # Torch-Pruning switches the model to eval() to trace it and never switches back.
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def build_graph(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    ignored_layers: Sequence[nn.Module] = (),
) -> tp.DependencyGraph:
    """Traces ``model`` into a Torch-Pruning dependency graph with nncompress's handlers registered.

    Recurrent layers get a handler that lets them consume pruned input features while keeping
    their hidden units; the model's train/eval mode is restored afterwards.

    Args:
        model: the model; it is run once on ``example_inputs`` (under autograd) and not modified.
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        ignored_layers: modules whose output channels must never be pruned.

    Returns:
        The built ``torch_pruning.DependencyGraph``.

    Raises:
        UnsupportedModelError: the model cannot be traced on these inputs.

    Example:
        >>> model = Net()
        >>> dg = build_graph(model, torch.randn(1, 1, 28, 28))
        >>> group = dg.get_pruning_group(model.conv1, tp.prune_conv_out_channels, [0, 1])
    """
    recurrent = _RecurrentInputPruner()
    customized: dict[type[nn.Module], tp.pruner.BasePruningFunc] = {t: recurrent for t in _RECURRENT_TYPES}
    customized.update(library_pruners(model))
    if isinstance(example_inputs, list):
        example_inputs = tuple(example_inputs)
    try:
        with (
            _preserve_mode(model),
            opaque_recurrent(model) as traced,
            opaque_shuffles(),
            opaque_window_attention(model),
            without_cache(model),
            torch.enable_grad(),
            warnings.catch_warnings(),
        ):
            # Torch-Pruning warns about every op it treats as element-wise; unsupported_ops()
            # reports what matters instead.
            warnings.simplefilter("ignore")
            dg = tp.DependencyGraph().build_dependency(
                model,
                example_inputs=example_inputs,
                customized_pruners=customized,  # type: ignore[arg-type]
                ignored_layers=list(ignored_layers),
                output_transform=traced_outputs,
                verbose=False,
            )
            dg._nncompress_recurrent = traced  # read by recurrent_groups()
            cut_shuffles(dg)
            mark_self_concats(dg)
            return dg
    except UnsupportedModelError:
        raise
    except Exception as exc:  # tracing runs arbitrary model code; anything can fail there
        raise UnsupportedModelError(
            f"could not trace the model to find coupled channels: {type(exc).__name__}: {exc}",
            model=type(model).__name__,
        ) from exc


def channel_groups(
    model: nn.Module,
    example_inputs: ExampleInputs | None = None,
    *,
    roots: Iterable[str] | None = None,
    dg: tp.DependencyGraph | None = None,
) -> list[ChannelGroup]:
    """Returns the disjoint groups of coupled output channels of ``model``.

    Args:
        model: the model.
        example_inputs: inputs to trace with; not needed when ``dg`` is given.
        roots: when given, only the groups having at least one of these layers as a root.
        dg: a graph from :func:`build_graph` to reuse.

    Returns:
        Groups in the order of their first root in ``model.named_modules()``.

    Raises:
        UnsupportedModelError: the model cannot be traced.

    Example:
        >>> [g.roots for g in channel_groups(resnet, x) if len(g.roots) > 1]
        [('conv1', 'layer1.0.conv2', 'layer1.1.conv2')]
    """
    if dg is None:
        if example_inputs is None:
            raise ValueError("channel_groups needs example_inputs or a prebuilt dg")
        dg = build_graph(model, example_inputs)
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    param_names: dict[Any, str] = dict(getattr(dg, "_param_to_name", {}))
    blocked = {m: reason for m, reason in _blocking_layers(model).items()}

    groups: list[ChannelGroup] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp_groups = list(
            dg.get_all_groups(
                ignored_layers=grouped_query_projections(model),
                root_module_types=(*_ROOT_TYPES, *conv1d_types(model)),
            )
        )
    for tp_group in tp_groups:
        group = _convert(tp_group, names, param_names, blocked, order)
        if group is not None:
            groups.append(group)
    fused = {fa.fused: fa for fa in fused_attentions(model)}
    groups = [
        _fused_group(model, fused[g.roots[0]])
        if g.roots[:1] == g.roots and g.roots and g.roots[0] in fused
        else g
        for g in groups
    ]
    groups.extend(_grouped_query_groups(model, names, {r for g in groups for r in g.roots}))
    groups.extend(_window_attention_groups(model, names, {r for g in groups for r in g.roots}))
    from nncompress.pruners.recurrent import recurrent_groups  # it imports this module

    groups.extend(recurrent_groups(model, dg))
    groups.sort(key=lambda g: min((order.get(r, 1 << 30) for r in g.roots), default=1 << 30))
    if roots is not None:
        wanted = set(roots)
        groups = [g for g in groups if wanted & set(g.roots)]
    return groups


def _grouped_query_groups(
    model: nn.Module, names: dict[nn.Module, str], covered: set[str]
) -> list[ChannelGroup]:
    """Unprunable groups for grouped-query q/k/v projections, which the graph search skips."""
    found = []
    for module in grouped_query_projections(model):
        name = names[module]
        if name in covered or not isinstance(module, nn.Linear):
            continue
        reason = "grouped-query attention heads are not pruned (a key/value head serves several query heads)"
        found.append(_blocked_linear(name, module, reason))
    return found


def _window_attention_groups(
    model: nn.Module, names: dict[nn.Module, str], covered: set[str]
) -> list[ChannelGroup]:
    """Unprunable groups for the Linears inside Swin window attention, which the trace treats as opaque."""
    found = []
    for attention in (m for m in model.modules() if is_window_attention(m)):
        for module in (attention.get_submodule("qkv"), attention.get_submodule("proj")):
            name = names[module]
            if name in covered:
                continue
            found.append(_blocked_linear(name, module, WINDOW_ATTENTION_REASON))
    return found


def _blocked_linear(name: str, module: nn.Module, reason: str) -> ChannelGroup:
    """A Linear's output channels as a group of their own that stays whole, for ``reason``."""
    channels = int(module.get_parameter("weight").shape[0])
    index = tuple(range(channels))
    return ChannelGroup(
        roots=(name,),
        members=(ChannelSlice(name, "weight", 0, index, index),),
        consumers=(),
        channels=channels,
        blockers=(f"{name}: {reason}",),
    )


def _fused_group(model: nn.Module, fa: FusedAttention) -> ChannelGroup:
    """The heads of a fused q/k/v projection: channel ``c`` is row ``c`` of each of q, k and v."""
    fused, out = model.get_submodule(fa.fused), model.get_submodule(fa.out)
    rows = tuple(range(3 * fa.width))
    chans = tuple(r % fa.width for r in rows)
    members = [ChannelSlice(fa.fused, "weight", 1 if is_conv1d(fused) else 0, rows, chans)]
    if getattr(fused, "bias", None) is not None:
        members.append(ChannelSlice(fa.fused, "bias", 0, rows, chans))
    cols = tuple(range(fa.width))
    consumer = ChannelSlice(fa.out, "weight", 0 if is_conv1d(out) else 1, cols, cols)
    return ChannelGroup(
        roots=(fa.fused,),
        members=tuple(members),
        consumers=(consumer,),
        channels=fa.width,
        block=fa.head_size,
    )


def _blocking_layers(model: nn.Module) -> dict[nn.Module, str]:
    blocked: dict[nn.Module, str] = {}
    for m in model.modules():
        if isinstance(m, _RECURRENT_TYPES):
            blocked[m] = "recurrent hidden units are not pruned"
        elif (isinstance(m, nn.LayerNorm) or is_rms_norm(m)) and not is_width_norm(m):
            # Removing channels a norm normalises across changes the statistics of those that stay,
            # so the speedup keeps such groups whole; pruning them would only add zeros.
            blocked[m] = f"{type(m).__name__} normalises across these channels"
        elif isinstance(m, nn.MultiheadAttention):
            blocked[m] = "nn.MultiheadAttention is not pruned; write attention with Linear layers"
    return blocked


def _convert(
    tp_group: Any,
    names: dict[nn.Module, str],
    param_names: dict[Any, str],
    blocked: dict[nn.Module, str],
    order: dict[str, int],
) -> ChannelGroup | None:
    roots: list[str] = []
    members: list[ChannelSlice] = []
    consumers: list[ChannelSlice] = []
    blockers: list[str] = []
    feeds_output = False
    channels = len(tp_group[0].idxs)
    block = segments = 1
    for item in tp_group.items:
        dep = item.dep
        module = dep.target.module
        idxs = tuple(int(i) for i in item.idxs)
        chans = tuple(int(i) for i in item.root_idxs)
        fn_name = getattr(dep.handler, "__name__", "")
        is_out = fn_name.endswith("out_channels")
        # A node nothing reads is a model output: Torch-Pruning adds an explicit output node only
        # when the last op is not a module (e.g. log_softmax after the classifier).
        if isinstance(module, tp.ops._OutputOp) or (is_out and not dep.target.outputs):
            feeds_output = True
        if isinstance(module, tp.ops._OutputOp):
            continue
        if is_self_concat_node(dep.target):
            blockers.append(f"{names.get(module, 'concat')}: {SELF_CONCAT_REASON}")
        if is_shuffle_node(dep.target):
            blockers.append(SHUFFLE_REASON)
            continue
        if is_window_attention_node(dep.target):
            blockers.append(WINDOW_ATTENTION_REASON)
            continue
        if isinstance(module, tp.ops._ReshapeOp):
            block = math.lcm(block, _split_block(dep.target.grad_fn, channels))
            continue
        if isinstance(module, nn.Parameter):
            full = param_names.get(module)
            if full is None:
                continue
            owner, _, pname = full.rpartition(".")
            dim = dep.target.pruning_dim % module.dim()
            members.append(ChannelSlice(owner, pname, dim, idxs, chans))
            continue
        name = names.get(module)
        if name is None:  # Torch-Pruning's own placeholder ops (add, cat, view, ...)
            continue
        if module in blocked and (is_out or not isinstance(module, _RECURRENT_TYPES)):
            blockers.append(f"{name}: {blocked[module]}")
        if isinstance(module, nn.GroupNorm):  # only whole norm groups can go (nncompress.norms)
            size, why = group_norm_block(module, idxs, chans, channels)
            block = math.lcm(block, size)
            if why:
                blockers.append(f"{name}: {why}")
        seg, why = grouped_segments(module, name, is_out, idxs, chans, channels)
        segments = math.lcm(segments, seg)
        if why:
            blockers.append(f"{name}: {why}")
        out_slices, in_slices, is_root = _slices(module, name, is_out, idxs, chans)
        members.extend(out_slices)
        consumers.extend(in_slices)
        if is_root and name not in roots:
            roots.append(name)
    if not members and not consumers:
        return None
    return ChannelGroup(
        roots=tuple(sorted(roots, key=lambda r: order.get(r, 0))),
        members=tuple(members),
        consumers=tuple(consumers),
        channels=channels,
        feeds_output=feeds_output,
        blockers=tuple(dict.fromkeys(blockers)),
        block=block if channels % block == 0 else 1,
        segments=segments if channels % segments == 0 else 1,
    )


def _split_block(grad_fn: Any, channels: int) -> int:
    """Block size a view/reshape imposes on a channel dimension of size ``channels`` (1 if none).

    The forward input shape is saved on the backward node, the output shape is its input metadata.
    If the channel dimension's elements end up spread over several output dimensions, e.g.
    ``(B, T, 64) -> (B, T, 4, 16)``, a channel only stays in its block of 16 when whole blocks go.
    A merge such as the flatten ``(B, 50, 4, 4) -> (B, 800)`` imposes nothing.
    """
    try:
        in_shape = [int(d) for d in grad_fn._saved_self_sym_sizes]
        out_shape = [int(d) for d in grad_fn._input_metadata[0].shape]
    except (AttributeError, IndexError, TypeError, RuntimeError):
        return 1  # private autograd metadata missing in this torch version: assume no split
    block = 1
    for cd in (i for i, d in enumerate(in_shape) if d == channels):
        inner = math.prod(in_shape[cd + 1 :])
        span = channels * inner
        tail = 1
        for j in range(len(out_shape) - 1, -1, -1):
            tail *= out_shape[j]
            if tail == span:
                after = math.prod(out_shape[j + 1 :])
                if after > inner and after % inner == 0 and channels % (after // inner) == 0:
                    block = math.lcm(block, after // inner)
                break
            if tail > span:
                break
    return block


def _slices(
    module: nn.Module, name: str, is_out: bool, idxs: tuple[int, ...], chans: tuple[int, ...]
) -> tuple[list[ChannelSlice], list[ChannelSlice], bool]:
    """Maps one Torch-Pruning group item to (member slices, consumer slices, is_root)."""

    def s(owner: str, param: str, dim: int, index: tuple[int, ...] = idxs) -> ChannelSlice:
        return ChannelSlice(owner, param, dim, index, chans if index is idxs else _repeat(chans, index))

    has_bias = getattr(module, "bias", None) is not None and isinstance(module.bias, torch.Tensor)
    if isinstance(module, nn.modules.conv._ConvNd):
        transposed = bool(module.transposed)
        if module.groups == module.out_channels and module.out_channels > 1:  # depthwise
            return [s(name, "weight", 0), *([s(name, "bias", 0)] if has_bias else [])], [], False
        if is_out:
            out = [s(name, "weight", 1 if transposed else 0), *([s(name, "bias", 0)] if has_bias else [])]
            return out, [], True
        return [], [s(name, "weight", 0 if transposed else 1)], False
    if isinstance(module, nn.Linear):
        if is_out:
            return [s(name, "weight", 0), *([s(name, "bias", 0)] if has_bias else [])], [], True
        return [], [s(name, "weight", 1)], False
    if isinstance(module, nn.Embedding):
        return [s(name, "weight", 1)], [], True
    if is_conv1d(module):  # weight is (in, out)
        if is_out:
            return [s(name, "weight", 1), *([s(name, "bias", 0)] if has_bias else [])], [], True
        return [], [s(name, "weight", 0)], False
    if isinstance(module, nn.MultiheadAttention):
        return _attention_slices(module, name, idxs, chans)
    if isinstance(module, _NORM_TYPES):
        affine = getattr(module, "affine", False) and module.weight is not None
        return ([s(name, "weight", 0), s(name, "bias", 0)] if affine else []), [], False
    if isinstance(module, nn.LayerNorm):
        out = []
        if module.weight is not None:
            out.append(s(name, "weight", module.weight.dim() - 1))
        if module.bias is not None:
            out.append(s(name, "bias", module.bias.dim() - 1))
        return out, [], False
    if is_rms_norm(module):
        return [s(name, "weight", 0)], [], False
    if is_frozen_batch_norm(module):  # its affine and statistics are buffers
        return [s(name, b, 0) for b in FROZEN_BN_BUFFERS[:2]], [], False
    if isinstance(module, nn.PReLU):
        return ([s(name, "weight", 0)] if module.num_parameters > 1 else []), [], False
    if isinstance(module, _RECURRENT_TYPES):
        if is_out:
            return [], [], False
        params = ["weight_ih_l0", *(["weight_ih_l0_reverse"] if module.bidirectional else [])]
        return [], [s(name, p, 1) for p in params], False
    return [], [], False


def _repeat(chans: tuple[int, ...], index: tuple[int, ...]) -> tuple[int, ...]:
    # ``index`` is ``k`` concatenated copies of positions, one copy per packed projection.
    return chans * (len(index) // len(chans))


def _attention_slices(
    module: nn.MultiheadAttention, name: str, idxs: tuple[int, ...], chans: tuple[int, ...]
) -> tuple[list[ChannelSlice], list[ChannelSlice], bool]:
    # Torch-Pruning removes an embedding channel from the query, key and value projections, the
    # input columns and the out projection at once (see MultiheadAttentionPruner).
    e = module.embed_dim
    qkv = tuple(i + k * e for k in range(3) for i in idxs)
    members: list[ChannelSlice] = []
    consumers: list[ChannelSlice] = []
    if module.in_proj_weight is not None:
        members.append(ChannelSlice(name, "in_proj_weight", 0, qkv, chans * 3))
        consumers.append(ChannelSlice(name, "in_proj_weight", 1, idxs, chans))
    else:
        for p in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            members.append(ChannelSlice(name, p, 0, idxs, chans))
    if module.in_proj_bias is not None:
        members.append(ChannelSlice(name, "in_proj_bias", 0, qkv, chans * 3))
    out = f"{name}.out_proj"
    members.append(ChannelSlice(out, "weight", 0, idxs, chans))
    if module.out_proj.bias is not None:
        members.append(ChannelSlice(out, "bias", 0, idxs, chans))
    consumers.append(ChannelSlice(out, "weight", 1, idxs, chans))
    return members, consumers, True


def unsupported_ops(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    groups: Sequence[ChannelGroup] | None = None,
) -> list[UnsupportedOp]:
    """Lists the layers that channel pruning cannot go through, with the reason.

    Found by running the model once with forward hooks, so only layers on the executed path are
    reported. A leaf layer with parameters of a type the dependency graph has no handler for is
    treated by Torch-Pruning as if channels passed through it unchanged, which is wrong for any
    layer that mixes channels.

    Args:
        model: the model (its train/eval mode is restored).
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        groups: the model's :func:`channel_groups`, when the caller has them; used only to tell
            which LSTM/GRU layers keep their hidden units (traced when needed and not given).

    Returns:
        One entry per offending layer, in execution order. An LSTM/GRU appears only when its
        hidden units cannot be pruned, with the reason.

    Example:
        >>> unsupported_ops(gru_read_by_a_conv, tokens)
        [UnsupportedOp(name='rnn', op_type='GRU', reason='rnn: its hidden state goes through conv; ...')]
    """
    known = (*_ROOT_TYPES, *_NORM_TYPES, nn.LayerNorm, nn.PReLU, *_RECURRENT_TYPES)
    names = {m: n for n, m in model.named_modules()}
    seen: list[nn.Module] = []
    children_of_known = {
        c for m in model.modules() if isinstance(m, known) for c in m.modules() if c is not m
    }

    def hook(module: nn.Module, _inputs: Any, _output: Any) -> None:
        if module not in seen:
            seen.append(module)

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with _preserve_mode(model), torch.no_grad():
            model.eval()
            _call(model, example_inputs)
    finally:
        for h in handles:
            h.remove()

    recurrent_blockers = _recurrent_blockers(model, example_inputs, groups, seen)
    found: list[UnsupportedOp] = []
    for m in seen:
        name, kind = names[m], type(m).__name__
        if isinstance(m, _RECURRENT_TYPES):
            if name in recurrent_blockers:
                found.append(
                    UnsupportedOp(
                        name,
                        kind,
                        f"{recurrent_blockers[name]}; its hidden units keep their size, its input "
                        "features follow the layer before it",
                    )
                )
        elif m in children_of_known or isinstance(m, known) or is_conv1d(m) or is_rms_norm(m):
            continue
        elif any(True for _ in m.parameters(recurse=False)):
            found.append(
                UnsupportedOp(
                    name,
                    kind,
                    f"no pruning handler for {kind}: the dependency "
                    "graph assumes its channels pass through unchanged; exclude the "
                    "layers around it or register a Torch-Pruning handler",
                )
            )
    return found


def _recurrent_blockers(
    model: nn.Module,
    example_inputs: ExampleInputs,
    groups: Sequence[ChannelGroup] | None,
    seen: list[nn.Module],
) -> dict[str, str]:
    """Why each executed LSTM/GRU keeps its hidden units (absent: they prune)."""
    if not any(isinstance(m, _RECURRENT_TYPES) for m in seen):
        return {}
    if groups is None:
        groups = channel_groups(model, example_inputs)
    names = {m: n for n, m in model.named_modules()}
    rooted = {g.roots[0]: g for g in groups if len(g.roots) == 1}
    blockers: dict[str, str] = {}
    for m in seen:
        if not isinstance(m, _RECURRENT_TYPES):
            continue
        name = names[m]
        group = rooted.get(name)
        if group is None:  # plain nn.RNN, or a layer the trace did not reach
            blockers[name] = f"{type(m).__name__} hidden units are not pruned"
        elif not group.prunable:
            blockers[name] = "; ".join(group.blockers) or "its hidden state is an output of the model"
    return blockers


def _call(model: nn.Module, example_inputs: ExampleInputs) -> Any:
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)
