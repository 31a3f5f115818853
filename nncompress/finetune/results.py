"""What a fine-tuning run reports: a record per epoch, progress while it runs, and the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nncompress.finetune.evaluate import EvalResult

__all__ = ["EpochRecord", "FinetuneProgress", "FinetuneResult"]


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch.

    Attributes:
        epoch: 1-based epoch number.
        train_loss: mean training loss (the mixed loss with distillation).
        train_ce: mean hard-label cross-entropy.
        train_kd: mean distillation term (already times ``T²``); None without distillation.
        lr: learning rate at the end of the epoch.
        val: validation accuracy and loss after the epoch.
        seconds: wall time of the epoch, evaluation included.
    """

    epoch: int
    train_loss: float
    train_ce: float
    train_kd: float | None
    lr: float
    val: EvalResult
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able form (``val_top1``, ``val_top5``, ``val_loss``)."""
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "train_ce": self.train_ce,
            "train_kd": self.train_kd,
            "lr": self.lr,
            "val_top1": self.val.top1,
            "val_top5": self.val.top5,
            "val_loss": self.val.loss,
            "val_samples": self.val.samples,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochRecord:
        """Inverse of :meth:`to_dict` (used to restore records from a checkpoint)."""
        val = EvalResult(
            top1=data["val_top1"], top5=data["val_top5"], loss=data["val_loss"], samples=data["val_samples"]
        )
        keys = ("epoch", "train_loss", "train_ce", "train_kd", "lr", "seconds")
        return cls(val=val, **{k: data[k] for k in keys})


@dataclass(frozen=True)
class FinetuneProgress:
    """What the progress callback receives, every few steps and after each epoch.

    Attributes:
        epoch: 1-based current epoch.
        epochs: total epochs.
        step: 1-based step within the epoch (``steps`` at the end of the epoch).
        steps: steps per epoch.
        loss: mean training loss of the epoch so far.
        lr: current learning rate.
        eta_seconds: estimated time to the end of the run (None until a step was timed).
        record: the finished epoch's record on the end-of-epoch report, else None.
    """

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    lr: float
    eta_seconds: float | None
    record: EpochRecord | None = None

    @property
    def fraction(self) -> float:
        """Share of the whole run done, in ``[0, 1]``."""
        return ((self.epoch - 1) * self.steps + self.step) / (self.epochs * self.steps)


@dataclass
class FinetuneResult:
    """The outcome of :func:`finetune`.

    Attributes:
        model: the fine-tuned model (the same object that was passed in), in eval mode.
        initial: validation result before the first epoch.
        final: validation result after the last epoch.
        epochs: one record per epoch, resumed ones included.
        resumed_from_epoch: epochs restored from a checkpoint (0 for a fresh run).
        device: where it ran.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        distillation: whether a teacher was distilled from.
        seconds: wall time of this call.
        samples_per_second: training throughput of this call (training steps only).
        notes: what was adjusted or ignored, in plain words.
    """

    model: nn.Module
    initial: EvalResult
    final: EvalResult
    epochs: list[EpochRecord]
    resumed_from_epoch: int
    device: str
    precision: str
    distillation: bool
    seconds: float
    samples_per_second: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the model itself left out)."""
        return {
            "initial": self.initial.to_dict(),
            "final": self.final.to_dict(),
            "epochs": [r.to_dict() for r in self.epochs],
            "resumed_from_epoch": self.resumed_from_epoch,
            "device": self.device,
            "precision": self.precision,
            "distillation": self.distillation,
            "seconds": self.seconds,
            "samples_per_second": self.samples_per_second,
            "notes": list(self.notes),
        }
