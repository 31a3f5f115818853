"""Test factory for channel masks: L1-chosen channels zeroed across each coupled group.

Stands in for a dependency-aware channel pruner: for every group that may change shape, the channels
with the smallest summed L1 norm (over all layers producing them) are masked in every producing layer
(conv/linear rows and biases, BatchNorm weight and bias, embedding columns, recurrent gate rows).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from nncompress.graph import ChannelGraph
from nncompress.graph.rnn import unit_rows

Masks = dict[str, dict[str, torch.Tensor]]


def _out_param_slices(module: nn.Module, channels: torch.Tensor) -> dict[str, tuple[int, torch.Tensor]]:
    """Parameter name -> (dim, indices) holding the given output channels of ``module``."""
    if isinstance(module, nn.modules.conv._ConvNd):
        slices = {"weight": (1 if module.transposed else 0, channels)}
        if module.bias is not None:
            slices["bias"] = (0, channels)
        return slices
    if isinstance(module, nn.Linear):
        slices = {"weight": (0, channels)}
        if module.bias is not None:
            slices["bias"] = (0, channels)
        return slices
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
        return {"weight": (0, channels), "bias": (0, channels)}
    if isinstance(module, nn.Embedding):
        return {"weight": (1, channels)}
    if isinstance(module, nn.LSTM | nn.GRU):
        rows = unit_rows(module, channels)
        return {name: (0, rows) for name, _ in module.named_parameters() if name.endswith("_l0")}
    return {}


def l1_channel_masks(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    ratio: float = 0.5,
    *,
    blocks: dict[str, int] | None = None,
) -> Masks:
    """Masks ``ratio`` of the channels of every prunable coupled group, chosen by smallest L1 norm.

    Args:
        model: the model (not modified).
        example_inputs: a dummy input, or a tuple of positional inputs.
        ratio: fraction of each group's channels to mask.
        blocks: root-name substring -> block size; such groups lose whole contiguous blocks (attention heads).

    Returns:
        Masks in the engine's format, one entry per producing layer of every masked group.
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    groups = ChannelGraph.build(copy.deepcopy(model), inputs).groups
    masks: Masks = {}
    for group in groups:
        if group.skip_reason is not None:
            continue
        producers = [side for side in group.layers if side.side == "out"]
        score = torch.zeros(group.channels, dtype=torch.float64)
        for side in producers:
            module = model.get_submodule(side.name)
            for name, (dim, _) in _out_param_slices(module, torch.arange(side.size)).items():
                param = getattr(module, name).detach().double()
                if isinstance(module, nn.LSTM | nn.GRU):
                    per = param.reshape(param.shape[0], -1).abs().sum(1)
                    per = per[unit_rows(module, torch.arange(side.size))].reshape(-1, side.size).sum(0)
                else:
                    per = param.transpose(0, dim).reshape(param.shape[dim], -1).abs().sum(1)
                score.index_add_(0, torch.as_tensor(side.channel), per[list(side.index)])
        block = next((b for key, b in (blocks or {}).items() if key in group.key), 1)
        count = int(group.channels * ratio) // block
        if count == 0:
            continue
        block_scores = score.reshape(-1, block).sum(1)
        chosen_blocks = torch.argsort(block_scores, stable=True)[:count]
        chosen = (chosen_blocks[:, None] * block + torch.arange(block)).flatten().tolist()
        for side in producers:
            module = model.get_submodule(side.name)
            own = torch.as_tensor(side.positions(chosen), dtype=torch.long)
            entry = masks.setdefault(side.name, {})
            for name, (dim, idx) in _out_param_slices(module, own).items():
                mask = entry.get(name, torch.ones_like(getattr(module, name)))
                mask.index_fill_(dim, idx, 0.0)
                entry[name] = mask
    return masks
