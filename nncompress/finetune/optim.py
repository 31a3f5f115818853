"""The optimizer and the learning-rate schedule a :class:`FinetuneSpec` asks for."""

from __future__ import annotations

import torch

from nncompress.finetune.spec import FinetuneSpec

__all__ = ["make_optimizer", "make_scheduler"]


def make_optimizer(params: list[torch.nn.Parameter], spec: FinetuneSpec) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW over ``params``, as ``spec.optimizer`` names.

    Args:
        params: the trainable parameters.
        spec: the options (optimizer, lr, momentum, weight decay).

    Returns:
        The optimizer.
    """
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, spec: FinetuneSpec, steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule of ``spec.schedule``, stepped once per batch.

    Args:
        optimizer: the optimizer whose learning rate it drives.
        spec: the options (schedule, epochs, step size, gamma).
        steps: batches per epoch.

    Returns:
        The scheduler, or None for a constant learning rate.
    """
    # Stepped per batch: a one-epoch fine-tune still sees its schedule.
    if spec.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.epochs * steps)
    if spec.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=spec.step_size * steps, gamma=spec.gamma)
    return None
