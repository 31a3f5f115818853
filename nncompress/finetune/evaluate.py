"""Accuracy and loss of a classifier on labelled data: the one scorer every report uses.

:class:`Scorer` accumulates top-1, top-5 and cross-entropy over batches of outputs, whatever produced them
(a torch model, an ONNX session); :func:`evaluate` runs a torch model over a data set with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.datasets import LabelledDataset
from nncompress.finetune.device import autocast, model_device, resolve_device

__all__ = ["EvalResult", "Scorer", "evaluate", "score_batches"]


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
    scorer = Scorer(data.num_classes)
    try:
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                x = data.x[start : start + batch_size].to(dev, non_blocking=True)
                y = data.y[start : start + batch_size].to(dev, non_blocking=True)
                with autocast(dev, amp):
                    out = model(x)
                scorer.add(out, y)
    finally:
        model.train(was_training)
    return scorer.result()


class Scorer:
    """Accumulates top-1, top-5 (with at least 5 classes) and summed cross-entropy over batches.

    Args:
        num_classes: the data's class count; top-5 is reported only when it is at least 5. None reads it
            from the outputs' width.

    Example:
        >>> s = Scorer(3)
        >>> s.add(torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), torch.tensor([0, 1]))
        >>> s.result().top1
        0.5
    """

    def __init__(self, num_classes: int | None = None) -> None:
        self.num_classes = num_classes
        self.correct1 = self.correct5 = self.samples = 0
        self.loss_sum = 0.0

    def add(self, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Scores one batch of ``(N, classes)`` logits or log-probabilities against ``(N,)`` labels."""
        out = outputs.float()
        labels = labels.to(out.device)
        if self.num_classes is None:
            self.num_classes = int(out.shape[-1])
        self.loss_sum += float(F.cross_entropy(out, labels, reduction="sum"))
        self.correct1 += int((out.argmax(dim=-1) == labels).sum())
        if self.num_classes >= 5:
            top = out.topk(min(5, out.shape[-1]), dim=-1).indices
            self.correct5 += int((top == labels[:, None]).any(dim=-1).sum())
        self.samples += int(labels.numel())

    def result(self) -> EvalResult:
        """The figures so far."""
        n = self.samples
        if n == 0:
            raise ValueError("no samples were scored")
        top5 = self.correct5 / n if (self.num_classes or 0) >= 5 else None
        return EvalResult(top1=self.correct1 / n, top5=top5, loss=self.loss_sum / n, samples=n)


def score_batches(
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int | None = None,
) -> EvalResult:
    """Scores ``forward`` (a model, an ONNX session wrapper) over ``(inputs, labels)`` batches."""
    scorer = Scorer(num_classes)
    with torch.inference_mode():
        for inputs, labels in batches:
            scorer.add(forward(inputs), labels)
    return scorer.result()
