"""Fine-tuning and evaluation of (pruned) classifiers, with knowledge distillation.

Example:
    >>> from nncompress.finetune import FinetuneSpec, evaluate, finetune
    >>> spec = FinetuneSpec.from_dict({"epochs": 1, "lr": 0.01, "distillation": {"weight": 0.5}})
    >>> result = finetune(pruned, train, val, spec, teacher=original, checkpoint_dir=job_dir / "ft")
    >>> result.initial.top1, result.final.top1
"""

from nncompress.finetune.checkpoint import CHECKPOINT_FILE, remove_checkpoint
from nncompress.finetune.distill import distillation_loss
from nncompress.finetune.errors import FinetuneCancelled
from nncompress.finetune.evaluate import EvalResult, evaluate
from nncompress.finetune.loop import finetune
from nncompress.finetune.results import EpochRecord, FinetuneProgress, FinetuneResult
from nncompress.finetune.spec import OPTIMIZERS, SCHEDULES, DistillationSpec, FinetuneSpec

__all__ = [
    "CHECKPOINT_FILE",
    "OPTIMIZERS",
    "SCHEDULES",
    "DistillationSpec",
    "EpochRecord",
    "EvalResult",
    "FinetuneCancelled",
    "FinetuneProgress",
    "FinetuneResult",
    "FinetuneSpec",
    "distillation_loss",
    "evaluate",
    "finetune",
    "remove_checkpoint",
]
