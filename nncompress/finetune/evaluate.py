"""Accuracy and loss of a classifier on a labelled data set."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.datasets import LabelledDataset
from nncompress.finetune.device import autocast, model_device, resolve_device

__all__ = ["EvalResult", "evaluate"]


@dataclass(frozen=True)
class EvalResult:
    """How a classifier does on a data set.

    Attributes:
        top1: fraction of samples whose highest score is the label, in ``[0, 1]``.
        top5: fraction whose label is among the five highest; None with fewer than 5 classes.
        loss: mean cross-entropy (log-softmax outputs give the same value as logits).
        samples: number of samples evaluated.
    """

    top1: float
    top5: float | None
    loss: float
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    model: nn.Module,
    data: LabelledDataset,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 256,
    amp: bool = False,
) -> EvalResult:
    """Top-1/top-5 accuracy and mean cross-entropy of ``model`` on ``data``.

    The model runs in eval mode (its previous mode is restored) without gradients.

    Args:
        model: a classifier returning ``(N, classes)`` logits or log-probabilities.
        data: the labelled samples.
        device: where to run; the model is moved there. Default: where the model already is.
        batch_size: samples per forward pass.
        amp: on CUDA, run under autocast (bf16 where supported).

    Returns:
        An :class:`EvalResult`.
    """
    dev = resolve_device(device) if device is not None else model_device(model)
    model.to(dev)
    was_training = model.training
    model.eval()
    correct1 = correct5 = 0
    loss_sum = 0.0
    n = len(data)
    k5 = data.num_classes >= 5
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                x = data.x[start : start + batch_size].to(dev, non_blocking=True)
                y = data.y[start : start + batch_size].to(dev, non_blocking=True)
                with autocast(dev, amp):
                    out = model(x)
                out = out.float()
                loss_sum += F.cross_entropy(out, y, reduction="sum").item()
                correct1 += (out.argmax(dim=1) == y).sum().item()
                if k5:
                    top = out.topk(min(5, out.shape[1]), dim=1).indices
                    correct5 += (top == y[:, None]).any(dim=1).sum().item()
    finally:
        model.train(was_training)
    return EvalResult(
        top1=correct1 / n,
        top5=correct5 / n if k5 else None,
        loss=loss_sum / n,
        samples=n,
    )
