"""The ``loading`` stage: a CPU copy of the model, its example input, the job's data, resumable masks."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from nncompress.datasets import LabelledDataset
from nncompress.errors import ConfigError
from nncompress.io.library_rebuild import is_hf_architecture
from nncompress.metrics import resolve_device
from nncompress.pipeline.checkpoint import load_masks, state_digest
from nncompress.pipeline.checks import builtin_dataset
from nncompress.pipeline.spec import JobSpec
from nncompress.pipeline.stages import STAGES, Stage
from nncompress.pipeline.state import JobState
from nncompress.pipeline.training import JobData, prepare_data

__all__ = ["load"]


def load(state: JobState, stage: Stage) -> None:
    """Copies the model to the CPU, checks it runs on the example input, prepares the job's data and
    picks up the masks an interrupted attempt saved.

    Pruning and the speedup run on the CPU (deterministic, and the verification compares like with
    like); only latency is measured on ``spec.device``.

    Raises:
        ConfigError: the device, architecture, input shape or data set do not fit the job.
    """
    spec, request = state.spec, state.request
    torch.manual_seed(spec.seed)
    state.device = _device(spec.device)
    state.original = copy.deepcopy(request.model).cpu().eval()
    state.example, state.input_dtype = _example_input(spec, request.architecture, state.original)
    output = _check_runs(state.original, state.example)
    state.job_data = _job_data(spec, state.example, output, request.dataset, request.val_dataset)
    if state.job_data is not None:
        state.live["data"] = state.job_data.summary
        if state.data is None:
            state.data = state.job_data.pruner_batches()
        if state.eval_data is None:
            state.eval_data = (state.job_data.val.x, state.job_data.val.y)
        if state.criterion is None:
            state.criterion = torch.nn.functional.cross_entropy
    elif spec.dataset is not None and (state.data is None or state.eval_data is None):
        batches, labelled = builtin_dataset(spec.dataset, state.example)
        state.data = batches if state.data is None else state.data
        state.eval_data = labelled if state.eval_data is None else state.eval_data
        if state.criterion is None:
            state.criterion = torch.nn.functional.cross_entropy
    state.model_digest = state_digest(state.original)
    _resume_masks(state)


def _resume_masks(state: JobState) -> None:
    """Reuses the masks of an attempt that got past pruning, when they belong to this spec and model."""
    spec, resume_from = state.spec, state.request.resume_from
    # Scheduled jobs resume from their own checkpoints (run_scheduled); masks come after pruning.
    if not spec.prunes or spec.schedule is not None or resume_from is None:
        return
    if STAGES.index(resume_from) <= STAGES.index("pruning"):
        return
    state.masks = load_masks(state.resume_dir, spec, state.model_digest)
    state.notes.append(
        "resumed: reused the masks the interrupted attempt saved"
        if state.masks is not None
        else f"resume from {resume_from!r} was asked, but no matching checkpoint was found; started over"
    )


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
