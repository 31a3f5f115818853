"""What one job's MLflow run holds: parameters, metrics (step series included) and tags, from the job row.

Pure functions over the stored spec and metrics, so what MLflow shows is exactly what the API shows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

# MLflow refuses longer parameter values (MAX_PARAM_VAL_LENGTH); the whole spec is an artifact too.
MAX_PARAM_CHARS = 6000
TAG_PREFIX = "nncompress."
JOB_ID_TAG = TAG_PREFIX + "job_id"


@dataclass(frozen=True)
class MetricPoint:
    key: str
    value: float
    step: int = 0


@dataclass
class RunContent:
    """A run's parameters, metric points and tags (MLflow's own ``mlflow.*`` tags not included)."""

    params: dict[str, str] = field(default_factory=dict)
    metrics: list[MetricPoint] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


def job_params(spec: dict[str, Any]) -> dict[str, str]:
    """The job's spec as flat parameters: ``pruner``, ``config_list`` (JSON), ``finetune.lr``…

    Nested objects become dotted keys; lists stay one JSON value (a config_list is read as a whole).
    Unset (null) values are left out.
    """
    params: dict[str, str] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                visit(f"{prefix}.{key}" if prefix else str(key), item)
        elif value is not None:
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            params[prefix] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."

    visit("", spec)
    return params


def job_metrics(metrics: dict[str, Any] | None) -> list[MetricPoint]:
    """Every number the job measured, as metric points named by their path in ``job.metrics``.

    ``before.params``, ``after.state_dict_bytes``, ``after.macs``, ``after.accuracy``; latency per
    batch size (``after.latency.b8.median_ms``); lists of records become step series: fine-tuning
    epochs (``finetune.epochs.val_top1`` at step = epoch), scheduled steps (``schedule.steps.*`` at
    step = 1, 2, …).
    """
    points: list[MetricPoint] = []

    def visit(prefix: str, value: Any, step: int) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, int | float):
            if math.isfinite(value):
                points.append(MetricPoint(prefix, float(value), step))
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(f"{prefix}.{key}" if prefix else str(key), item, step)
        elif isinstance(value, list) and all(isinstance(item, dict) for item in value):
            for index, item in enumerate(value, start=1):
                if "batch_size" in item:  # latency: one entry per batch size, not a series
                    rest = {k: v for k, v in item.items() if k != "batch_size"}
                    visit(f"{prefix}.b{item['batch_size']}", rest, step)
                else:
                    at = item.get("epoch", item.get("step", index))
                    at = at if isinstance(at, int) and not isinstance(at, bool) else index
                    visit(prefix, {k: v for k, v in item.items() if k not in ("epoch", "step")}, at)

    visit("", metrics or {}, 0)
    return points


def job_tags(
    *,
    job_id: str,
    tenant_id: str,
    tenant_name: str | None,
    status: str,
    model_id: str,
    error_type: str | None,
) -> dict[str, str]:
    """The tags a run is found by: the job (unique per run), its tenant, model and final status."""
    tags = {
        JOB_ID_TAG: job_id,
        TAG_PREFIX + "tenant_id": tenant_id,
        TAG_PREFIX + "status": status,
        TAG_PREFIX + "model_id": model_id,
    }
    if tenant_name is not None:
        tags[TAG_PREFIX + "tenant"] = tenant_name
    if error_type is not None:
        tags[TAG_PREFIX + "error_type"] = error_type
    return tags
