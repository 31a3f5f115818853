"""``run_job``: the one function a worker (or the CLI) calls to run a compression job.

The job is a pipeline: one :class:`~nncompress.pipeline.state.JobState` handed to each stage function
of :data:`~nncompress.pipeline.steps.PIPELINE` in the order of ``STAGES``; the
:class:`~nncompress.pipeline.stages.StageRunner` around each call checks for cancellation, times it and
reports its progress.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.datasets import LabelledDataset
from nncompress.errors import ConfigError
from nncompress.pipeline.checks import EvalData
from nncompress.pipeline.result import JobResult
from nncompress.pipeline.spec import JobSpec
from nncompress.pipeline.stages import STAGES, StageRunner, spans_for
from nncompress.pipeline.state import JobRequest, JobState
from nncompress.pipeline.steps import PIPELINE
from nncompress.progress import ProgressFn, noop_progress

__all__ = ["run_job"]


def run_job(
    spec: JobSpec,
    *,
    model: nn.Module,
    architecture: str | None,
    out_dir: str | Path,
    architecture_kwargs: Mapping[str, Any] | None = None,
    progress: ProgressFn = noop_progress,
    should_stop: Callable[[], bool] = lambda: False,
    resume_from: str | None = None,
    data: Iterable[Any] | Callable[[nn.Module], None] | None = None,
    criterion: Callable[[Any, Any], torch.Tensor] | None = None,
    eval_data: EvalData | None = None,
    dataset: LabelledDataset | None = None,
    val_dataset: LabelledDataset | None = None,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
) -> JobResult:
    """Runs one compression job from a loaded model to artifacts on disk.

    The model passed in is never modified. Pruning and the speedup run on the CPU (deterministic,
    and the verification compares like with like); latency is measured on ``spec.device``.

    Args:
        spec: the validated job.
        model: the model to compress (e.g. from :func:`nncompress.io.load_model`).
        architecture: its registry name (``timm/<model>`` included) or ``hf/<transformers class>``,
            which makes the artifact reloadable without pickle; None for models that came from
            ONNX or a pickle (the weights are still saved, with a note).
        out_dir: the job's folder; created when missing.
        architecture_kwargs: what the architecture was built with, recorded in the manifest:
            a timm folder's ``model_args``, or ``{"config": ...}`` for ``hf/…`` (by default read
            from ``model.config``). None: the registry's kwargs plus a head fitted to the weights.
        progress: called as ``progress(stage, percent_of_job, message)``; percent never decreases
            and the last call reports 100.
        should_stop: polled before each stage; when it returns True, :class:`JobCancelled` is raised.
        resume_from: a stage name from a previous, interrupted attempt in the same ``out_dir``; the
            masks that attempt saved are reused when they belong to the same spec and model, so
            pruning (the expensive, data-driven step) is not repeated. Otherwise the job starts over.
        data: batches or a training callable for the data-driven pruners (slim, taylorfo, apoz,
            mean_activation).
        criterion: loss function ``(outputs, targets) -> loss`` for pruners that need gradients.
        eval_data: labelled data, ``(inputs, labels)`` or an iterable of such batches; when given,
            top-1 accuracy is measured before and after compression.
        dataset: the job's labelled data set (``spec.dataset_id`` loaded by the caller). It is
            split into training and validation parts (``spec.val_fraction``, seeded by
            ``spec.seed``) unless ``val_dataset`` is given, and feeds the data-driven pruners,
            fine-tuning, scheduled pruning, calibration and every accuracy figure.
        val_dataset: the data set's own validation part, if it came with one.
        on_metrics: called with the stage metrics measured so far (``data``, ``finetune``,
            ``schedule``, ``quantized``) whenever an epoch or a scheduled step finishes, so a
            service can show them while the job runs.

    Returns:
        A :class:`JobResult`; ``result.to_dict()`` is also written to ``report.json``.

    Raises:
        JobCancelled: ``should_stop()`` returned True between stages.
        ConfigError: the config, pruner options or input shape do not fit the model.
        SpeedupError / VerificationError: the compressed model is not equivalent.
        ArtifactError: an artifact failed its reload or ONNX check.
    """
    if resume_from is not None and resume_from not in STAGES:
        raise ConfigError(
            f"resume_from must be one of {', '.join(STAGES)}, got {resume_from!r}", key="resume_from"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    request = JobRequest(
        spec=spec,
        model=model,
        architecture=architecture,
        out=out,
        architecture_kwargs=architecture_kwargs,
        should_stop=should_stop,
        resume_from=resume_from,
        dataset=dataset,
        val_dataset=val_dataset,
        on_metrics=on_metrics,
    )
    state = JobState(request, data=data, criterion=criterion, eval_data=eval_data)
    runner = StageRunner(progress, should_stop, _spans(spec))
    state.timings = runner.timings  # the exporting stage writes those so far into report.json
    for name, step in PIPELINE.items():
        with runner.stage(name, step.message(state)) as stage:
            step.run(state, stage)
    assert state.result is not None  # the exporting stage always sets it
    return dataclasses.replace(state.result, timings=dict(runner.timings))


def _spans(spec: JobSpec) -> dict[str, tuple[float, float]]:
    epochs = spec.finetune.epochs if spec.finetune is not None else 0
    if spec.schedule is not None:
        return spans_for(scheduled_epochs=epochs * spec.schedule.steps, quantize=spec.quantize is not None)
    return spans_for(finetune_epochs=epochs, quantize=spec.quantize is not None)
