"""What a finished job returns: metrics before/after, per-layer channels, and the artifacts on disk."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.io.tensors import sha256_file
from nncompress.metrics import ModelMetrics, file_bytes
from nncompress.pipeline.spec import JobSpec

__all__ = ["Artifact", "JobResult", "LatencyBudget", "LayerChange", "file_artifact", "layer_changes"]


@dataclass(frozen=True)
class Artifact:
    """One file the job wrote, content-addressed.

    Attributes:
        name: file name inside the job folder (``model.safetensors`` …).
        path: absolute path on disk.
        sha256: hex digest of the file's bytes.
        size_bytes: file size.
        media_type: HTTP content type to serve it with.
    """

    name: str
    path: str
    sha256: str
    size_bytes: int
    media_type: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LayerChange:
    """Channels of one weighted layer before and after compression (None where a side has no channels)."""

    name: str
    type: str
    in_before: int | None
    in_after: int | None
    out_before: int | None
    out_after: int | None
    params_before: int
    params_after: int
    sparsity_after: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LatencyBudget:
    """The time the evaluating stage had for timing latency, where that figure came from, and its use.

    Attributes:
        seconds: wall seconds allowed for both models at every batch size (half each).
        source: ``"options"`` (the job's ``latency_budget_s``) or how the default was worked out,
            e.g. ``"auto: 0.2 × the 19.7 s of the stages before evaluating"``.
        spent_s: wall seconds the passes took, warm-up included (one pass may overrun a share).
        skipped: batch sizes not timed because one pass would overrun the budget, each with why.
    """

    seconds: float
    source: str
    spent_s: float = 0.0
    skipped: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "skipped": list(self.skipped)}


@dataclass(frozen=True)
class JobResult:
    """Everything a finished job produced.

    Attributes:
        spec: the spec that ran.
        architecture: the name the artifact is rebuilt from (a registry name, ``timm/<model>``,
            ``hf/<transformers class>``), if any.
        metrics_before: measured on the model as given.
        metrics_after: measured on the compressed model.
        layers: per weighted layer, channels before/after.
        artifacts: files written, with sha256 and size (report.json last).
        speedup_applied: True when the model was physically shrunk.
        kept: kept channel indices per pruned layer (empty without speedup).
        checks: verification, reload and ONNX checks that ran, with their measured differences.
        notes: plain-language remarks for the user (skipped stages, why).
        timings: wall seconds per stage.
        accuracy: top-1 accuracy ``{"before": …, "after": …}`` on ``eval_data``, when it was given.
        stage_metrics: what the data-driven stages measured, keyed ``data`` (the data set and its
            split), ``finetune`` (accuracy of the original, pruned and fine-tuned model, every
            epoch), ``schedule`` (every scheduled step) and ``quantized`` (int8 vs fp32 bytes,
            latency, accuracy); only the stages that ran.
        latency_budget: the time latency was timed to, and why that much.
    """

    spec: JobSpec
    architecture: str | None
    metrics_before: ModelMetrics
    metrics_after: ModelMetrics
    layers: tuple[LayerChange, ...]
    artifacts: tuple[Artifact, ...]
    speedup_applied: bool
    kept: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float] | None = None
    stage_metrics: dict[str, Any] = field(default_factory=dict)
    latency_budget: LatencyBudget | None = None

    def artifact(self, name: str) -> Artifact:
        """Returns the artifact called ``name``; KeyError lists the names there are."""
        for item in self.artifacts:
            if item.name == name:
                return item
        raise KeyError(f"no artifact {name!r}; there are {', '.join(a.name for a in self.artifacts)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``json.dumps`` works on it as is)."""
        return {
            "spec": self.spec.to_dict(),
            "architecture": self.architecture,
            "metrics": {
                "before": {**self.metrics_before.to_dict(), **self._accuracy("before")},
                "after": {**self.metrics_after.to_dict(), **self._accuracy("after")},
                **self.stage_metrics,
            },
            "layers": [layer.to_dict() for layer in self.layers],
            "artifacts": [a.to_dict() for a in self.artifacts],
            "speedup_applied": self.speedup_applied,
            "kept": self.kept,
            "checks": self.checks,
            "notes": list(self.notes),
            "timings": self.timings,
            "latency_budget": self.latency_budget.to_dict() if self.latency_budget is not None else None,
        }

    def _accuracy(self, which: str) -> dict[str, float]:
        return {"accuracy": self.accuracy[which]} if self.accuracy is not None else {}


def layer_changes(before: nn.Module, after: nn.Module) -> tuple[LayerChange, ...]:
    """Channels and parameters of every layer with parameters, matched by module name before/after."""
    after_modules = dict(after.named_modules())
    changes = []
    for name, module in before.named_modules():
        own = list(module.parameters(recurse=False))
        twin = after_modules.get(name)
        if not name or not own or twin is None:
            continue
        in_before, out_before = _channels(module)
        in_after, out_after = _channels(twin)
        # Sparsity of the weight, as in ModelMetrics (biases and norm shifts start at zero anyway).
        weight = getattr(twin, "weight", None)
        counted = [weight] if isinstance(weight, torch.Tensor) else list(twin.parameters(recurse=False))
        numel = sum(p.numel() for p in counted)
        zeros = numel - sum(int(torch.count_nonzero(p.detach())) for p in counted)
        changes.append(
            LayerChange(
                name=name,
                type=type(module).__name__,
                in_before=in_before,
                in_after=in_after,
                out_before=out_before,
                out_after=out_after,
                params_before=sum(p.numel() for p in own),
                params_after=sum(p.numel() for p in twin.parameters(recurse=False)),
                sparsity_after=zeros / numel if numel else 0.0,
            )
        )
    return tuple(changes)


# Attribute pairs (input side, output side) that name a layer's channels, by layer family.
_CHANNEL_ATTRS: tuple[tuple[str | None, str], ...] = (
    ("in_channels", "out_channels"),  # convolutions
    ("in_features", "out_features"),  # Linear
    ("input_size", "hidden_size"),  # LSTM, GRU, RNN
    (None, "embedding_dim"),  # Embedding: the vocabulary is not a channel dimension
    ("num_features", "num_features"),  # BatchNorm, InstanceNorm
    ("num_channels", "num_channels"),  # GroupNorm
    ("embed_dim", "embed_dim"),  # MultiheadAttention
)


def _channels(module: nn.Module) -> tuple[int | None, int | None]:
    for in_attr, out_attr in _CHANNEL_ATTRS:
        out = getattr(module, out_attr, None)
        if isinstance(out, int):
            inp = getattr(module, in_attr, None) if in_attr else None
            return (inp if isinstance(inp, int) else None), out
    shape = getattr(module, "normalized_shape", None)  # LayerNorm
    if isinstance(shape, tuple) and shape:
        return int(shape[-1]), int(shape[-1])
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        # transformers' Conv1D (GPT-2) stores its weight as (in, out): y = x @ weight + bias.
        return int(weight.shape[0]), int(weight.shape[1])
    # Anything else: read the channels off the weight, output dimension first as in torch layers.
    if isinstance(weight, torch.Tensor) and weight.dim() >= 1:
        return (int(weight.shape[1]) if weight.dim() > 1 else None), int(weight.shape[0])
    return None, None


def file_artifact(path: Path, media_type: str) -> Artifact:
    """Describes a written file: absolute path, sha256, size and the content type to serve it with."""
    return Artifact(
        name=path.name,
        path=str(path.resolve()),
        sha256=sha256_file(path),
        size_bytes=file_bytes(path),
        media_type=media_type,
    )
