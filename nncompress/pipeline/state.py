"""What the stages of a job pass on to each other: one :class:`JobState`, filled in stage by stage.

``run_job`` builds it from its arguments (the :class:`JobRequest`), then hands it to each stage
function in turn (:mod:`nncompress.pipeline.steps`). A stage reads what the stages before it left and
adds its own products; nothing else carries data between stages.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nncompress.datasets import LabelledDataset
from nncompress.graph import ChannelGraph
from nncompress.metrics import ModelMetrics
from nncompress.pipeline.checks import EvalData
from nncompress.pipeline.result import Artifact, JobResult, LatencyBudget, LayerChange
from nncompress.pipeline.spec import JobSpec
from nncompress.pipeline.training import JobData

if TYPE_CHECKING:  # the pruners are imported only by the stages that prune
    from nncompress.pruners.masks import Masks

__all__ = ["RESUME_DIR", "JobRequest", "JobState", "PrunerData"]

PrunerData = Iterable[Any] | Callable[[nn.Module], None]

# The folder of out_dir holding what a retried attempt may reuse (masks, training checkpoints).
RESUME_DIR = "_resume"


@dataclass(frozen=True)
class JobRequest:
    """What the caller of ``run_job`` asked for (see its docstring for each argument)."""

    spec: JobSpec
    model: nn.Module
    architecture: str | None
    out: Path
    architecture_kwargs: Mapping[str, Any] | None
    should_stop: Callable[[], bool]
    resume_from: str | None
    dataset: LabelledDataset | None
    val_dataset: LabelledDataset | None
    on_metrics: Callable[[dict[str, Any]], None] | None


@dataclass(eq=False)
class JobState:
    """One job between its stages.

    Fields without a default are set by the stage that produces them (``loading`` sets the original
    model and the example input, ``speedup`` the compressed model, ``evaluating`` the metrics);
    a later stage may rely on them.
    """

    request: JobRequest
    # The pruners' data, criterion and the evaluation data: the caller's, else the job's data set's.
    data: PrunerData | None = None
    criterion: Callable[[Any, Any], torch.Tensor] | None = None
    eval_data: EvalData | None = None
    notes: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)  # the stage metrics, published as measured
    timings: dict[str, float] = field(default_factory=dict)  # seconds per finished stage

    # loading
    device: torch.device = field(init=False)
    original: nn.Module = field(init=False)  # a CPU copy of the caller's model, never modified
    example: torch.Tensor = field(init=False)
    input_dtype: torch.dtype = field(init=False)
    job_data: JobData | None = None
    model_digest: str = ""
    masks: Masks | None = None  # the pruner's (or reused from the resume checkpoint)

    # pruning, speedup
    graph: ChannelGraph | None = None  # one trace serves the channel pruner and the speedup
    scheduled: Any = None  # the ScheduledResult of a scheduled job
    masked: nn.Module | None = None  # the original with the masks baked in: the reference
    compressed: nn.Module = field(init=False)
    kept: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    # quantizing, evaluating, exporting
    quantized_artifacts: list[Artifact] = field(default_factory=list)
    metrics_before: ModelMetrics = field(init=False)
    metrics_after: ModelMetrics = field(init=False)
    accuracy: dict[str, float] | None = None
    latency_budget: LatencyBudget | None = None
    layers: tuple[LayerChange, ...] = ()
    result: JobResult | None = None  # with every artifact, report.json included

    @property
    def spec(self) -> JobSpec:
        """The job's spec."""
        return self.request.spec

    @property
    def resume_dir(self) -> Path:
        """Where this attempt leaves what a retry may reuse."""
        return self.request.out / RESUME_DIR

    def publish(self) -> None:
        """Hands the stage metrics measured so far to ``on_metrics`` (a JSON copy: callers keep it)."""
        if self.request.on_metrics is not None:
            self.request.on_metrics(self.live_copy())

    def live_copy(self) -> dict[str, Any]:
        """The stage metrics as plain JSON values, detached from the dicts the stages keep filling."""
        copied: dict[str, Any] = json.loads(json.dumps(self.live))
        return copied
