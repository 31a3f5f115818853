"""The data-driven stages of a job: its labelled data, fine-tuning, and scheduled pruning.

``run_job`` calls these; each turns the engine's own progress records (``FinetuneProgress``,
``ScheduledProgress``) into stage progress with a readable message, publishes finished epochs and
steps as they happen (``publish``), and turns the engine's cancellation into :class:`JobCancelled`.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.datasets import LabelledDataset, check_compatible, from_arrays, split
from nncompress.finetune import (
    FinetuneCancelled,
    FinetuneProgress,
    FinetuneResult,
    FinetuneSpec,
    evaluate,
    finetune,
)
from nncompress.pipeline.spec import JobSpec
from nncompress.pipeline.stages import JobCancelled, Stage

__all__ = ["JobData", "finetune_message", "prepare_data", "run_finetuning", "run_scheduled"]

# Batches of the training part handed to the data-driven pruners (as the scheduled pruner does).
_PRUNER_BATCH = 64
_PRUNER_BATCHES = 16

Publish = Callable[[], None]


@dataclass(frozen=True)
class JobData:
    """The job's labelled data, split into a training and a validation part."""

    train: LabelledDataset
    val: LabelledDataset
    summary: dict[str, Any]

    def pruner_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The ``data=`` of the data-driven pruners: the first batches of the training part."""
        return self.train.batches(_PRUNER_BATCH, limit=_PRUNER_BATCHES)


def prepare_data(
    spec: JobSpec,
    example: torch.Tensor,
    output: object,
    *,
    dataset: LabelledDataset | None,
    val_dataset: LabelledDataset | None,
) -> JobData | None:
    """Checks the job's data set against the model and splits it (seeded) unless validation was given.

    Args:
        spec: the job (``val_fraction``, ``seed``, ``dataset``).
        example: the model's example input, batch first.
        output: what the model returned for ``example`` (its class count is checked when 2-D).
        dataset: the uploaded data set, when the job has one.
        val_dataset: its own validation part, when it came with one.

    Returns:
        The data, or None when the job has none.

    Raises:
        DatasetError: the samples do not fit the model's input, or there are more classes than outputs.
    """
    if dataset is None and spec.dataset is not None:
        dataset = _builtin(spec.dataset)
    if dataset is None:
        return None
    classes = int(output.shape[1]) if isinstance(output, torch.Tensor) and output.dim() == 2 else None
    for part in (dataset, val_dataset):
        if part is not None:
            check_compatible(part, input_shape=tuple(example.shape), num_classes=classes)
    if val_dataset is not None:
        train, val, how = dataset, val_dataset, "given"
    else:
        train, val = split(dataset, spec.val_fraction, spec.seed)
        how = f"seeded split: val_fraction={spec.val_fraction}, seed={spec.seed}"
    summary = {
        "format": dataset.source_format,
        "sha256": dataset.sha256,
        "num_classes": dataset.num_classes,
        "sample_shape": list(dataset.sample_shape),
        "train_samples": len(train),
        "val_samples": len(val),
        "validation": how,
    }
    return JobData(train=train, val=val, summary=summary)


def _builtin(name: str) -> LabelledDataset:
    from nncompress.data import load_mnist_subset

    images, labels = load_mnist_subset()
    # The digest of what the pipeline trains on (the fine-tuning checkpoint is keyed by it).
    digest = hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()
    return from_arrays(images.numpy(), labels.numpy(), source_format=name, sha256=digest, num_classes=10)


def finetune_message(p: FinetuneProgress, prefix: str = "") -> str:
    """``epoch e/E step s/S loss L eta Ns``: what the job's progress message shows while training."""
    eta = f" eta {p.eta_seconds:.0f}s" if p.eta_seconds is not None else ""
    return f"{prefix}epoch {p.epoch}/{p.epochs} step {p.step}/{p.steps} loss {p.loss:.4f}{eta}"


def run_finetuning(
    model: nn.Module,
    original: nn.Module,
    data: JobData,
    ft: FinetuneSpec,
    *,
    stage: Stage,
    should_stop: Callable[[], bool],
    checkpoint_dir: Path,
    record: dict[str, Any],
    publish: Publish,
    prefix: str = "",
) -> FinetuneResult:
    """Fine-tunes ``model`` in place; fills ``record`` (original, pruned, finetuned, epochs) as it goes.

    A checkpoint is written to ``checkpoint_dir`` after every epoch; a retry of the job with the same
    folder resumes after the last finished one (``record['resumed_from_epoch']``).

    Raises:
        JobCancelled: ``should_stop()`` said stop between two steps.
    """
    record.setdefault("original", evaluate(original, data.val, batch_size=ft.eval_batch_size).to_dict())
    record.setdefault("epochs", [])
    publish()

    def progress(p: FinetuneProgress) -> None:
        stage.update(p.fraction, finetune_message(p, prefix))
        if p.record is not None:
            record["epochs"].append(p.record.to_dict())
            record["finetuned"] = p.record.val.to_dict()
            publish()

    # The teacher is a copy: fine-tuning moves it to the training device, the original stays put.
    teacher = copy.deepcopy(original) if ft.distillation is not None else None
    try:
        result = finetune(
            model,
            data.train,
            data.val,
            ft,
            teacher=teacher,
            progress=progress,
            should_stop=should_stop,
            checkpoint_dir=checkpoint_dir,
        )
    except FinetuneCancelled as exc:
        raise JobCancelled(exc.message, stage=stage.name, **exc.context) from exc
    record.update(
        {
            "pruned": result.initial.to_dict(),
            "finetuned": result.final.to_dict(),
            "epochs": [r.to_dict() for r in result.epochs],
            "resumed_from_epoch": result.resumed_from_epoch,
            "device": result.device,
            "precision": result.precision,
            "distillation": result.distillation,
            "seconds": result.seconds,
            "samples_per_second": result.samples_per_second,
            "notes": list(result.notes),
        }
    )
    publish()
    model.cpu().eval()
    return result


def run_scheduled(
    original: nn.Module,
    spec: JobSpec,
    data: JobData,
    example: torch.Tensor,
    *,
    stage: Stage,
    should_stop: Callable[[], bool],
    checkpoint_dir: Path,
    record: dict[str, Any],
    publish: Publish,
) -> Any:
    """Scheduled pruning (Linear/AGP) to the config's targets, fine-tuning after every step.

    Fills ``record['steps']`` with each finished step (sparsity, params, validation accuracy) as it
    finishes. Calling again with the same ``checkpoint_dir`` after a crash replays finished steps
    and resumes the interrupted one from its last epoch.

    Returns:
        The :class:`~nncompress.pruners.scheduled.ScheduledResult`.

    Raises:
        JobCancelled: ``should_stop()`` said stop.
    """
    from nncompress.pruners.scheduled import ScheduledProgress, scheduled_prune

    assert spec.schedule is not None and spec.finetune is not None and spec.pruner is not None
    record.setdefault("steps", [])

    def progress(p: ScheduledProgress) -> None:
        prefix = f"step {p.step}/{p.steps} "
        message = finetune_message(p.finetune, prefix) if p.finetune is not None else prefix + p.phase
        stage.update(p.fraction, message)
        if p.record is not None:
            record["steps"].append(p.record.to_dict())
            publish()

    try:
        return scheduled_prune(
            original,
            list(spec.config_list),
            schedule=spec.schedule.kind,
            steps=spec.schedule.steps,
            basic_pruner=spec.pruner,
            finetune_spec=spec.finetune,
            train=data.train,
            val=data.val,
            example_inputs=example,
            speedup=spec.speedup,
            accuracy_budget=spec.schedule.accuracy_budget,
            progress=progress,
            should_stop=should_stop,
            checkpoint_dir=checkpoint_dir,
        )
    except FinetuneCancelled as exc:
        raise JobCancelled(exc.message, stage=stage.name, **exc.context) from exc
