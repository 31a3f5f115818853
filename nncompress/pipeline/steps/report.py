"""The ``evaluating`` and ``exporting`` stages: before/after measurements, then the artifacts (weights
and manifest, ONNX, the int8 model, ``report.json``), each checked once written."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.errors import ArtifactError
from nncompress.io.artifacts import MANIFEST_FILE, WEIGHTS_FILE, load_compressed, save_compressed
from nncompress.io.library_rebuild import is_hf_architecture, transformers_build_kwargs
from nncompress.io.onnx_export import check_onnx, export_onnx_with_info
from nncompress.metrics import measure_model
from nncompress.pipeline.checkpoint import remove_checkpoint
from nncompress.pipeline.checks import output_tensors, top1_accuracy
from nncompress.pipeline.result import Artifact, JobResult, LatencyBudget, file_artifact, layer_changes
from nncompress.pipeline.spec import (
    LATENCY_BUDGET_CAP_S,
    LATENCY_BUDGET_FLOOR_S,
    LATENCY_BUDGET_SHARE,
    JobSpec,
)
from nncompress.pipeline.stages import Stage
from nncompress.pipeline.state import JobState

__all__ = ["evaluate", "export", "latency_budget"]

_REPORT_FILE = "report.json"
_ONNX_FILE = "model.onnx"


def evaluate(state: JobState, stage: Stage) -> None:
    """Measures the original and the compressed model (size, FLOPs, latency on ``spec.device``) and,
    with labelled data, their top-1 accuracy. Latency is timed to :func:`latency_budget`, half for
    each model; the compressed model is timed at the batch sizes the original was, so every figure
    has its counterpart."""
    spec, original, compressed = state.spec, state.original, state.compressed
    budget = latency_budget(spec, state.timings)
    measure = {
        "example_inputs": state.example,
        "device": str(state.device),
        "runs": spec.latency_runs,
        "warmup": max(1, spec.latency_runs // 10),
        "dtype": getattr(torch, spec.latency_dtype),
        "budget_s": budget.seconds / 2,  # the original and the compressed model
        # An explicit budget is the user's: every batch size asked for gets at least one pass.
        "fit_budget": spec.latency_budget_s is None,
    }
    state.metrics_before = measure_model(original, batch_sizes=spec.latency_batch_sizes, **measure)
    stage.update(0.5, "measured the original model")
    # The batch sizes the original was timed at, every one: the smaller model fits where it did,
    # and a figure without its counterpart compares nothing (consumers pair them up).
    timed = tuple(s.batch_size for s in state.metrics_before.latency)
    state.metrics_after = measure_model(compressed, batch_sizes=timed, **{**measure, "fit_budget": False})
    skipped = state.metrics_before.latency_skipped
    state.notes.extend(f"latency at {reason} (set options.latency_budget_s to time it)" for reason in skipped)
    figures = state.metrics_before.latency + state.metrics_after.latency
    state.latency_budget = dataclasses.replace(
        budget, spent_s=round(sum(s.elapsed_s for s in figures), 3), skipped=skipped
    )
    if state.eval_data is not None:
        stage.update(0.8, "measuring accuracy")
        state.accuracy = {
            "before": top1_accuracy(original, state.eval_data),
            "after": top1_accuracy(compressed, state.eval_data),
        }
    state.layers = layer_changes(original, compressed)


def latency_budget(spec: JobSpec, timings: Mapping[str, float]) -> LatencyBudget:
    """The seconds a job times latency for: its ``latency_budget_s``, else a share of its own work.

    Args:
        spec: the job.
        timings: wall seconds of the stages that ran before evaluating, in this attempt.

    Returns:
        A :class:`LatencyBudget` with the seconds and their source (nothing spent yet).
    """
    if spec.latency_budget_s is not None:
        return LatencyBudget(seconds=spec.latency_budget_s, source="options")
    work = sum(timings.values())
    seconds = min(LATENCY_BUDGET_CAP_S, max(LATENCY_BUDGET_FLOOR_S, LATENCY_BUDGET_SHARE * work))
    return LatencyBudget(
        seconds=round(seconds, 3),
        source=f"auto: {LATENCY_BUDGET_SHARE:g} × the {work:.1f} s of the stages before evaluating, "
        f"within {LATENCY_BUDGET_FLOOR_S:g}-{LATENCY_BUDGET_CAP_S:g} s",
    )


def export(state: JobState, stage: Stage) -> None:
    """Writes and checks the artifacts, then ``report.json`` (``state.result``); removes the resume
    checkpoint, since a retry now has nothing to resume.

    Raises:
        ArtifactError: the reloaded artifact or the ONNX model does not compute what the compressed
            model computes.
    """
    request, out, notes, checks = state.request, state.request.out, state.notes, state.checks
    compressed, example = state.compressed, state.example
    artifacts = _save_weights(
        state,
        architecture_kwargs=_architecture_kwargs(
            request.architecture, state.original, request.architecture_kwargs
        ),
        metrics={"before": state.metrics_before.to_dict(), "after": state.metrics_after.to_dict()},
    )
    stage.update(0.3, "saved weights and manifest")
    if request.architecture is not None:
        checks["reload"] = _check_reload(out, compressed, example, architecture=request.architecture)
    else:
        notes.append(
            "the model has no registry architecture, so model.safetensors cannot be rebuilt "
            "without the original code; use model.onnx to run it"
        )
    stage.update(0.5, "reloaded the artifact")
    if state.spec.export_onnx:
        onnx_artifact, checks["onnx"] = _export_onnx(out / _ONNX_FILE, compressed, example)
        artifacts.append(onnx_artifact)
    else:
        notes.append("ONNX export was turned off for this job")
    artifacts.extend(state.quantized_artifacts)
    result = JobResult(
        spec=state.spec,
        architecture=request.architecture,
        metrics_before=state.metrics_before,
        metrics_after=state.metrics_after,
        layers=state.layers,
        artifacts=tuple(artifacts),
        speedup_applied=bool(state.kept),
        kept=state.kept,
        checks=checks,
        notes=tuple(notes),
        timings=dict(state.timings),
        accuracy=state.accuracy,
        stage_metrics=state.live_copy(),
        latency_budget=state.latency_budget,
    )
    # The report lists every other artifact; it cannot list its own hash.
    report_path = out / _REPORT_FILE
    report_path.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    report = file_artifact(report_path, "application/json")
    _remove_training_checkpoints(state.resume_dir)
    remove_checkpoint(state.resume_dir)
    state.result = dataclasses.replace(result, artifacts=(*artifacts, report))


def _save_weights(
    state: JobState, *, architecture_kwargs: dict[str, Any] | None, metrics: dict[str, Any]
) -> list[Artifact]:
    out, spec = state.request.out, state.spec
    save_compressed(
        state.compressed,
        out,
        architecture=state.request.architecture,
        architecture_kwargs=architecture_kwargs,
        kept=state.kept,
        config_list=spec.config_list,
        pruner=spec.pruner or "none",
        input_shape=list(state.example.shape),
        input_dtype=state.input_dtype,
        metrics=metrics,
        extra={"speedup_applied": bool(state.kept), "notes": list(state.notes)},
    )
    return [
        file_artifact(out / WEIGHTS_FILE, "application/octet-stream"),
        file_artifact(out / MANIFEST_FILE, "application/json"),
    ]


def _architecture_kwargs(
    architecture: str | None, original: nn.Module, given: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The build arguments the original model needed (a library model's head fitted to its
    weights, e.g. ``num_classes=10``; a transformers model's config before speedup), so the
    manifest rebuilds the same model; None: the registry's."""
    if given is not None:
        return dict(given)
    if architecture is None:
        return None
    if is_hf_architecture(architecture):
        return transformers_build_kwargs(original)
    from nncompress.models import get
    from nncompress.models.libraries import state_overrides

    shapes = {k: list(v.shape) for k, v in original.state_dict().items()}
    overrides = state_overrides(architecture, shapes)
    return {**get(architecture).kwargs, **overrides} if overrides else None


def _check_reload(
    out: Path, compressed: nn.Module, example: torch.Tensor, *, architecture: str
) -> dict[str, Any]:
    # Prove the artifact is what we claim: rebuilt from its manifest without pickle, it computes
    # exactly what the compressed model computes (same ops on the same device: bit-identical).
    reloaded = load_compressed(out)
    with torch.inference_mode():
        pairs = zip(output_tensors(reloaded(example)), output_tensors(compressed(example)), strict=True)
        diff = max((float((a - b).abs().max()) for a, b in pairs if a.numel()), default=0.0)
    if diff != 0.0:
        raise ArtifactError(
            f"the reloaded artifact differs from the compressed model by {diff:.3g}", max_abs_diff=diff
        )
    return {"max_abs_diff": diff, "architecture": architecture}


def _export_onnx(path: Path, compressed: nn.Module, example: torch.Tensor) -> tuple[Artifact, dict[str, Any]]:
    written, exporter = export_onnx_with_info(compressed, example, path)
    check = check_onnx(written, compressed, example, rtol=1e-4, atol=1e-4)
    return file_artifact(written, "application/onnx"), {"exporter": exporter, **asdict(check)}


def _remove_training_checkpoints(resume: Path) -> None:
    """Deletes the fine-tuning, scheduled and QAT checkpoints once the job's artifacts are written."""
    from nncompress.finetune import remove_checkpoint as remove_finetune_checkpoint

    remove_finetune_checkpoint(resume / "finetune")
    for name in ("finetune", "scheduled", "qat"):
        shutil.rmtree(resume / name, ignore_errors=True)
