"""``finetune()``: pick the device, resume from a checkpoint, run the epochs, report the result.

The per-epoch work (batches, distillation, progress, cancellation) is
:class:`~nncompress.finetune.trainer.Trainer`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from nncompress.datasets import LabelledDataset
from nncompress.errors import ConfigError
from nncompress.finetune.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from nncompress.finetune.determinism import deterministic
from nncompress.finetune.device import amp_dtype, resolve_device
from nncompress.finetune.evaluate import evaluate
from nncompress.finetune.results import EpochRecord, FinetuneProgress, FinetuneResult
from nncompress.finetune.spec import FinetuneSpec
from nncompress.finetune.trainer import Trainer

__all__ = ["EpochRecord", "FinetuneProgress", "FinetuneResult", "finetune"]


def finetune(
    model: nn.Module,
    train: LabelledDataset,
    val: LabelledDataset,
    spec: FinetuneSpec,
    *,
    teacher: nn.Module | None = None,
    progress: Callable[[FinetuneProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
) -> FinetuneResult:
    """Fine-tunes a (pruned) classifier, optionally distilling from a teacher.

    On CPU the run is deterministic for ``spec.seed``: two runs give bit-identical weights, and a run
    resumed from a checkpoint ends with the weights of an uninterrupted one.

    Args:
        model: the model to train, in place (mask parametrizations, if any, stay in force).
        train: training samples.
        val: validation samples, evaluated before the first and after every epoch.
        spec: the options.
        teacher: the model to distil from; required when ``spec.distillation`` is set.
        progress: called with a :class:`FinetuneProgress` about 50 times per epoch and after each epoch.
        should_stop: polled before every step; when it returns True, :class:`FinetuneCancelled` is raised.
        checkpoint_dir: where to save the state after every epoch (and look for one to resume).
        resume: continue from the checkpoint in ``checkpoint_dir`` when it belongs to this run.

    Returns:
        A :class:`FinetuneResult`.

    Raises:
        FinetuneCancelled: ``should_stop()`` returned True.
        ConfigError: distillation without a teacher, CUDA asked for but absent.
    """
    if spec.distillation is not None and teacher is None:
        raise ConfigError("finetune.distillation needs the teacher model", key="finetune.distillation")
    started = time.perf_counter()
    device = resolve_device(spec.device)
    dtype = amp_dtype(device, spec.amp)
    notes: list[str] = []
    if teacher is not None and spec.distillation is None:
        notes.append("a teacher was given but finetune.distillation is not set: trained on labels only")
        teacher = None
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    print_ = fingerprint(model, train, val, spec, teacher=teacher is not None) if folder is not None else ""
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    with deterministic(device):
        run = Trainer(model, train, val, spec, device, dtype, teacher, progress, should_stop)
        state = load_checkpoint(folder, print_) if folder is not None and resume else None
        if state is not None:
            run.restore(state)
        else:
            torch.manual_seed(spec.seed)  # dropout and anything else that draws from the global RNG
            run.initial = evaluate(model, val, batch_size=spec.eval_batch_size, amp=spec.amp)
        resumed = len(run.records)
        for epoch in range(resumed + 1, spec.epochs + 1):
            run.epoch(epoch)
            if folder is not None:
                save_checkpoint(folder, {"fingerprint": print_, **run.state()})
    model.eval()
    assert run.initial is not None
    return FinetuneResult(
        model=model,
        initial=run.initial,
        final=run.records[-1].val,
        epochs=list(run.records),
        resumed_from_epoch=resumed,
        device=str(device),
        precision={None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
        distillation=teacher is not None,
        seconds=time.perf_counter() - started,
        samples_per_second=run.trained_samples / run.train_seconds if run.train_seconds > 0 else 0.0,
        notes=notes,
    )
