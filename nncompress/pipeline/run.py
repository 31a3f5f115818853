"""``run_job``: the one function a worker (or the CLI) calls to run a compression job."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.datasets import LabelledDataset
from nncompress.errors import ArtifactError, ConfigError, NotCompressedError, UnsupportedModelError
from nncompress.graph import ChannelGraph
from nncompress.io.artifacts import MANIFEST_FILE, WEIGHTS_FILE, load_compressed, save_compressed
from nncompress.io.library_rebuild import is_hf_architecture, transformers_build_kwargs
from nncompress.io.onnx_export import check_onnx, export_onnx_with_info
from nncompress.metrics import measure_model, resolve_device
from nncompress.pipeline.checkpoint import load_masks, remove_checkpoint, save_masks, state_digest
from nncompress.pipeline.checks import (
    EvalData,
    builtin_dataset,
    output_tensors,
    top1_accuracy,
    verify_outputs,
)
from nncompress.pipeline.result import Artifact, JobResult, file_artifact, layer_changes
from nncompress.pipeline.spec import JobSpec
from nncompress.pipeline.stages import STAGES, StageRunner, spans_for
from nncompress.pipeline.training import JobData, prepare_data, run_finetuning, run_scheduled
from nncompress.progress import ProgressFn, noop_progress

__all__ = ["run_job"]

# Pruners whose masks are element-wise: they become sparsity, never a smaller shape.
_UNSTRUCTURED = frozenset({"level"})


_REPORT_FILE = "report.json"


_ONNX_FILE = "model.onnx"


_RESUME_DIR = "_resume"


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
    run = StageRunner(progress, should_stop, _spans(spec))
    notes: list[str] = []
    checks: dict[str, Any] = {}
    live: dict[str, Any] = {}  # the stage metrics, published as they are measured

    def publish() -> None:
        if on_metrics is not None:
            on_metrics(json.loads(json.dumps(live)))

    with run.stage("loading"):
        torch.manual_seed(spec.seed)
        device = _device(spec.device)
        original = copy.deepcopy(model).cpu().eval()
        example, input_dtype = _example_input(spec, architecture, original)
        output = _check_runs(original, example)
        job_data = _job_data(spec, example, output, dataset, val_dataset)
        if job_data is not None:
            live["data"] = job_data.summary
            data = job_data.pruner_batches() if data is None else data
            eval_data = (job_data.val.x, job_data.val.y) if eval_data is None else eval_data
            criterion = torch.nn.functional.cross_entropy if criterion is None else criterion
        elif spec.dataset is not None and (data is None or eval_data is None):
            batches, labelled = builtin_dataset(spec.dataset, example)
            data = batches if data is None else data
            eval_data = labelled if eval_data is None else eval_data
            if criterion is None:
                criterion = torch.nn.functional.cross_entropy
        model_digest = state_digest(original)

    masks: dict[str, dict[str, torch.Tensor]] | None = None
    resume = out / _RESUME_DIR
    if (
        spec.prunes
        and spec.schedule is None
        and resume_from is not None
        and STAGES.index(resume_from) >= STAGES.index("speedup")
    ):
        masks = load_masks(resume, spec, model_digest)
        notes.append(
            "resumed: reused the masks the interrupted attempt saved"
            if masks is not None
            else f"resume from {resume_from!r} was asked, but no matching checkpoint was found; started over"
        )

    scheduled: Any = None
    masked: nn.Module | None = None
    structured = spec.pruner not in _UNSTRUCTURED
    # One trace of the original serves the channel pruner and the speedup (same architecture, same input).
    graph: ChannelGraph | None = None
    with run.stage("pruning", _pruning_message(spec, masks)) as stage:
        if spec.schedule is not None:
            assert job_data is not None  # JobSpec requires finetune, _job_data a data set
            live["schedule"] = {}
            scheduled = run_scheduled(
                original,
                spec,
                job_data,
                example,
                stage=stage,
                should_stop=should_stop,
                checkpoint_dir=resume / "scheduled",
                record=live["schedule"],
                publish=publish,
            )
        elif not spec.prunes:
            notes.append("no pruning was asked for (pruner null): the model keeps its shapes")
        elif masks is None:
            from nncompress.pruners import prune

            assert spec.pruner is not None
            graph = _channel_graph(original, example) if structured else None
            pruned = prune(
                copy.deepcopy(original),
                list(spec.config_list),
                pruner=spec.pruner,
                example_inputs=example,
                graph=graph,
                data=data,
                criterion=criterion,
            )
            masks = {
                m: {p: t.detach().cpu() for p, t in params.items()} for m, params in pruned.masks.items()
            }
            save_masks(resume, spec, model_digest, masks)
        if masks is not None:
            masked = _apply_masks(copy.deepcopy(original), masks)

    kept: dict[str, dict[str, list[int]]] = {}
    with run.stage("speedup"):
        if scheduled is not None:
            compressed = scheduled.model.cpu().eval()
            kept = dict(scheduled.kept or {})
            live["schedule"] = {**scheduled.to_dict(), "steps": live["schedule"].get("steps", [])}
            live["schedule"]["steps"] = [s.to_dict() for s in scheduled.steps]
            notes.extend(scheduled.notes)
            notes.append(
                f"scheduled pruning ({spec.schedule.kind if spec.schedule else ''}, "
                f"{len(scheduled.steps)} step(s) run, step {scheduled.chosen_step} kept)"
                + (": stopped early at the accuracy budget" if scheduled.stopped_early else "")
            )
        elif masked is None or masks is None:
            compressed = copy.deepcopy(original)
        elif spec.speedup and structured:
            from nncompress.speedup import speedup

            sped = speedup(original, masks, example, verify=spec.verify, graph=graph)
            _require_smaller(sped)
            compressed = sped.model.eval()
            kept = {m: {d: list(i) for d, i in dims.items()} for m, dims in sped.kept.items()}
            checks["speedup"] = _jsonable(sped.to_dict())
            if not kept:
                notes.append(
                    "the masks emptied no whole channel, so no layer changed shape; "
                    "the zeros are kept as sparsity"
                )
        else:
            compressed = masked
            reason = (
                f"{spec.pruner} prunes single weights, which cannot shrink a layer"
                if not structured
                else "speedup was turned off for this job"
            )
            notes.append(
                f"no speedup: {reason}; the saved weights are the masked model's "
                "(same shapes, pruned weights are zero) and the manifest has no kept indices"
            )
    speedup_applied = bool(kept)

    with run.stage("verifying"):
        if scheduled is not None:
            notes.append(
                "each scheduled step's speedup was verified as it ran; the fine-tuned model is checked "
                "against its reloaded artifact when it is exported"
            )
        elif masked is None:
            pass  # nothing was pruned, so there is nothing to compare
        elif spec.verify:
            checks["equivalence"] = verify_outputs(masked, compressed, example, seed=spec.seed)
        else:
            notes.append("verification was turned off for this job")

    with run.stage("finetuning", "fine-tuning" if spec.finetune else "not asked") as stage:
        if scheduled is not None:
            live["finetune"] = _scheduled_finetune(scheduled)
        elif spec.finetune is not None and job_data is not None:
            live["finetune"] = {}
            # Without a speedup the pruned weights are zeros in full-size layers: keep them pruned
            # while training, as masks, so fine-tuning cannot grow them back.
            kept_masks = masks if masks is not None and not kept else None
            if kept_masks is not None:
                from nncompress.pruners import apply_masks

                apply_masks(compressed, kept_masks)
            run_finetuning(
                compressed,
                original,
                job_data,
                spec.finetune,
                stage=stage,
                should_stop=should_stop,
                checkpoint_dir=resume / "finetune",
                record=live["finetune"],
                publish=publish,
            )
            if kept_masks is not None:
                from nncompress.pruners import remove_masks

                remove_masks(compressed, leave_masked=True)

    quantized_artifacts: list[Artifact] = []
    with run.stage("quantizing", "quantizing" if spec.quantize else "not asked") as stage:
        if spec.quantize is not None:
            from nncompress.pipeline.quantizing import run_quantizing

            live["quantized"] = {}
            quantized_artifacts = run_quantizing(
                compressed,
                original,
                spec,
                job_data,
                example,
                out,
                stage=stage,
                should_stop=should_stop,
                checkpoint_dir=resume / "qat",
                record=live["quantized"],
                publish=publish,
            )

    with run.stage("evaluating") as stage:
        measure = {
            "example_inputs": example,
            "device": str(device),
            "batch_sizes": spec.latency_batch_sizes,
            "runs": spec.latency_runs,
            "warmup": max(1, spec.latency_runs // 10),
            "dtype": getattr(torch, spec.latency_dtype),
            "budget_s": spec.latency_budget_s / 2,  # the original and the compressed model
        }
        before = measure_model(original, **measure)
        stage.update(0.5, "measured the original model")
        after = measure_model(compressed, **measure)
        accuracy = None
        if eval_data is not None:
            stage.update(0.8, "measuring accuracy")
            accuracy = {
                "before": top1_accuracy(original, eval_data),
                "after": top1_accuracy(compressed, eval_data),
            }
        layers = layer_changes(original, compressed)

    with run.stage("exporting") as stage:
        artifacts = _save_weights(
            out,
            compressed,
            spec=spec,
            architecture=architecture,
            architecture_kwargs=_architecture_kwargs(architecture, original, architecture_kwargs),
            kept=kept,
            example=example,
            input_dtype=input_dtype,
            metrics={"before": before.to_dict(), "after": after.to_dict()},
            notes=notes,
        )
        stage.update(0.3, "saved weights and manifest")
        if architecture is not None:
            checks["reload"] = _check_reload(out, compressed, example, architecture=architecture)
        else:
            notes.append(
                "the model has no registry architecture, so model.safetensors cannot be rebuilt "
                "without the original code; use model.onnx to run it"
            )
        stage.update(0.5, "reloaded the artifact")
        if spec.export_onnx:
            onnx_artifact, checks["onnx"] = _export_onnx(out / _ONNX_FILE, compressed, example)
            artifacts.append(onnx_artifact)
        else:
            notes.append("ONNX export was turned off for this job")
        artifacts.extend(quantized_artifacts)
        result = JobResult(
            spec=spec,
            architecture=architecture,
            metrics_before=before,
            metrics_after=after,
            layers=layers,
            artifacts=tuple(artifacts),
            speedup_applied=speedup_applied,
            kept=kept,
            checks=checks,
            notes=tuple(notes),
            timings=dict(run.timings),
            accuracy=accuracy,
            stage_metrics=json.loads(json.dumps(live)),
        )
        # The report lists every other artifact; it cannot list its own hash.
        report_path = out / _REPORT_FILE
        report_path.write_text(
            json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        report = file_artifact(report_path, "application/json")
        _remove_training_checkpoints(resume)
        remove_checkpoint(resume)
    return dataclasses.replace(result, artifacts=(*artifacts, report), timings=dict(run.timings))


def _device(name: str) -> torch.device:
    try:
        return resolve_device(name)
    except ValueError as exc:
        raise ConfigError(str(exc), key="device", value=name) from exc


def _example_input(
    spec: JobSpec, architecture: str | None, model: nn.Module | None = None
) -> tuple[torch.Tensor, torch.dtype]:
    generator = torch.Generator().manual_seed(spec.seed)
    arch = None
    if architecture is not None and not is_hf_architecture(architecture):
        from nncompress.models import get

        try:
            arch = get(architecture)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0]), key="architecture") from exc
    shape = spec.input_shape or (arch.input_shape if arch is not None else None)
    if shape is None:
        raise ConfigError(
            "input_shape is required when the model has no registry architecture", key="input_shape"
        )
    if spec.input_dtype is not None:
        wants_ids = spec.input_dtype == "int64"
    else:
        wants_ids = arch is not None and arch.input_dtype == torch.long
    if wants_ids:
        vocab = _vocab_size(arch, model)
        return torch.randint(0, vocab, tuple(shape), generator=generator), torch.long
    return torch.randn(tuple(shape), generator=generator), torch.float32


def _channel_graph(model: nn.Module, example: torch.Tensor) -> ChannelGraph | None:
    """The model's channel graph, or None when it cannot be traced (the pruner then says why)."""
    try:
        return ChannelGraph.build(model, example)
    except UnsupportedModelError:
        return None


def _require_smaller(sped: Any) -> None:
    """A job whose pruned channels were all kept by blocking layers has not compressed anything: it fails,
    naming the layers that blocked it, instead of reporting a success with the original size."""
    if sped.smaller or not sped.blocked_by:
        return
    blocked = sped.blocked_by
    shown = "; ".join(blocked[:5]) + (f"; … ({len(blocked)} in all)" if len(blocked) > 5 else "")
    raise NotCompressedError(
        f"the model came out no smaller ({sped.params_before:,} parameters): every selected channel "
        f"group is blocked — {shown}. Select other layers (preflight shows which groups are prunable)",
        blocked_by=blocked,
        params=sped.params_before,
    )


def _vocab_size(arch: Any, model: nn.Module | None) -> int:
    """The exclusive upper bound of valid token ids: the architecture's vocabulary, a transformers
    config's, the bound an ONNX import found for its first input, else the smallest embedding table
    of the model (any id below it is valid for every table).

    The widest valid range matters: ids drawn from {0, 1} (BERT's token-type table) would leave most
    of the word embedding out of the speedup's verification.
    """
    if arch is not None and "vocab_size" in arch.kwargs:
        return int(arch.kwargs["vocab_size"])
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(vocab, int) and vocab > 0:
        return vocab
    onnx_inputs = (getattr(model, "meta", None) or {}).get("onnx", {}).get("summary", {}).get("inputs", [])
    high = onnx_inputs[0].get("int_high") if onnx_inputs else None
    if isinstance(high, int) and high > 0:
        return high
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)] if model else []
    return min(sizes) if sizes else 100


def _check_runs(model: nn.Module, example: torch.Tensor) -> object:
    try:
        with torch.inference_mode():
            return model(example)
    except Exception as exc:  # any failure here means the input does not fit the model
        raise ConfigError(
            f"the model does not accept an input of shape {list(example.shape)}: {exc}",
            key="input_shape",
            shape=list(example.shape),
        ) from exc


def _apply_masks(model: nn.Module, masks: Mapping[str, Mapping[str, torch.Tensor]]) -> nn.Module:
    modules = dict(model.named_modules())
    for name in masks:
        if name not in modules:
            raise ConfigError(
                f"the pruner returned a mask for {name!r}, which the model does not have", layer=name
            )
    # The speedup's own path, so "after pruning" is the model the speedup is verified against.
    from nncompress.pruners.masks import bake_masks

    return bake_masks(model, {n: dict(p) for n, p in masks.items()}).eval()


def _save_weights(
    out: Path,
    compressed: nn.Module,
    *,
    spec: JobSpec,
    architecture: str | None,
    architecture_kwargs: dict[str, Any] | None,
    kept: dict[str, dict[str, list[int]]],
    example: torch.Tensor,
    input_dtype: torch.dtype,
    metrics: dict[str, Any],
    notes: list[str],
) -> list[Artifact]:
    save_compressed(
        compressed,
        out,
        architecture=architecture,
        architecture_kwargs=architecture_kwargs,
        kept=kept,
        config_list=spec.config_list,
        pruner=spec.pruner or "none",
        input_shape=list(example.shape),
        input_dtype=input_dtype,
        metrics=metrics,
        extra={"speedup_applied": bool(kept), "notes": list(notes)},
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _spans(spec: JobSpec) -> dict[str, tuple[float, float]]:
    epochs = spec.finetune.epochs if spec.finetune is not None else 0
    if spec.schedule is not None:
        return spans_for(scheduled_epochs=epochs * spec.schedule.steps, quantize=spec.quantize is not None)
    return spans_for(finetune_epochs=epochs, quantize=spec.quantize is not None)


def _pruning_message(spec: JobSpec, masks: object) -> str:
    if spec.schedule is not None:
        return f"{spec.schedule.kind} schedule, {spec.schedule.steps} step(s) of {spec.pruner}"
    if not spec.prunes:
        return "not asked"
    return "reused saved masks" if masks is not None else str(spec.pruner)


def _job_data(
    spec: JobSpec,
    example: torch.Tensor,
    output: object,
    dataset: LabelledDataset | None,
    val_dataset: LabelledDataset | None,
) -> JobData | None:
    """The job's labelled data, when it has one and something uses it; a job that needs one must have one."""
    trains = spec.finetune is not None or spec.schedule is not None or spec.quantize is not None
    if dataset is None and not (spec.dataset is not None and trains):
        if trains and spec.needs_data:
            raise ConfigError(
                "this job trains, calibrates or ranks channels from data: give it a data set "
                "(dataset_id of an uploaded one, or dataset='mnist_subset')",
                key="dataset_id",
            )
        return None
    return prepare_data(spec, example, output, dataset=dataset, val_dataset=val_dataset)


def _scheduled_finetune(scheduled: Any) -> dict[str, Any]:
    """The fine-tuning record of a scheduled job: every step fine-tuned, the chosen step's epochs shown."""
    chosen = scheduled.steps[scheduled.chosen_step - 1] if scheduled.chosen_step else None
    return {
        "original": scheduled.baseline.to_dict(),
        "finetuned": chosen.val.to_dict() if chosen is not None else scheduled.baseline.to_dict(),
        "epochs": list(chosen.finetune) if chosen is not None else [],
        "scheduled": True,
        "chosen_step": scheduled.chosen_step,
    }


def _remove_training_checkpoints(resume: Path) -> None:
    """Deletes the fine-tuning, scheduled and QAT checkpoints once the job's artifacts are written."""
    from nncompress.finetune import remove_checkpoint as remove_finetune_checkpoint

    remove_finetune_checkpoint(resume / "finetune")
    for name in ("finetune", "scheduled", "qat"):
        shutil.rmtree(resume / name, ignore_errors=True)
