"""Bounds checked at ``POST /v1/jobs`` before a job is queued: numbers that JSON allows but the
service cannot use, and resource sizes that would hold a worker for hours or fail after minutes.

Two layers, both 422 naming the field and the limit:
- :func:`check_numbers` walks the whole request: every float finite, every integer within a signed
  64-bit range (JSON admits ``NaN``, ``Infinity`` and 400-digit integers; torch, NumPy and the
  database do not).
- :func:`check_job_limits` checks the parsed spec against the deployment's limits
  (:class:`JobLimits`, from settings): input elements and batch size, latency batch sizes and
  runs, seeds, fine-tuning epochs and calibration batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from core.errors import InvalidJobSpec
from core.settings import Settings
from nncompress.pipeline import JobSpec

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SEED_LIMIT = 2**63  # seeds go to torch.manual_seed / numpy, which take a signed or unsigned 64-bit value


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    # An explicit stack: the request's nesting is already bounded by the JSON parser, but a walk
    # that never recurses cannot fail on depth whatever the parser allows.
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
        else:
            yield where, item


def _bad_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX


def _all_numbers_fit(body: Any) -> bool:
    # The walk of every submit, so it builds no path: only a request that fails is walked again,
    # naming the field (the paths were most of the walk's cost, 5% of a submit's CPU).
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif _bad_number(item):
            return False
    return True


def check_numbers(body: dict[str, Any]) -> None:
    """Raises InvalidJobSpec (422) for a non-finite float or an integer outside the int64 range.

    Args:
        body: the request as Python values (``JobIn.model_dump()``, ``PreflightIn.model_dump()``).
    """
    if _all_numbers_fit(body):
        return
    for where, value in _leaves(body, ""):
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidJobSpec(
                f"{where}: {value!r} is not a finite number",
                errors=[{"field": where, "value": str(value), "expected": "a finite number"}],
            )
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            shown = str(value) if len(str(value)) <= 40 else f"an integer of {len(str(value))} digits"
            raise InvalidJobSpec(
                f"{where}: {shown} is out of range; integers must lie in [-2**63, 2**63)",
                errors=[{"field": where, "maximum": INT64_MAX, "minimum": INT64_MIN}],
            )


@dataclass(frozen=True)
class JobLimits:
    """The largest job a deployment accepts (see README, Configuration)."""

    max_input_elements: int = 2**25
    max_batch_size: int = 1024
    max_latency_runs: int = 1000
    max_finetune_epochs: int = 100
    max_calibration_batches: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> JobLimits:
        """The limits a deployment set through ``NNCOMPRESS_MAX_*``."""
        return cls(
            max_input_elements=settings.max_input_elements,
            max_batch_size=settings.max_batch_size,
            max_latency_runs=settings.max_latency_runs,
            max_finetune_epochs=settings.max_finetune_epochs,
            max_calibration_batches=settings.max_calibration_batches,
        )


def _over(field: str, value: int, maximum: int, what: str) -> InvalidJobSpec:
    return InvalidJobSpec(
        f"{field}={value} is over this deployment's limit of {maximum} ({what})",
        errors=[{"field": field, "value": value, "maximum": maximum}],
    )


def check_input_shape(shape: list[int], limits: JobLimits) -> None:
    """Raises InvalidJobSpec (422) for an example input over the batch or element limit."""
    if not shape:
        return
    if shape[0] > limits.max_batch_size:
        raise _over("input_shape[0]", shape[0], limits.max_batch_size, "batch size")
    elements = math.prod(shape)
    if elements > limits.max_input_elements:
        raise _over("input_shape", elements, limits.max_input_elements, "input elements")


def check_job_limits(spec: JobSpec, limits: JobLimits) -> None:
    """Raises InvalidJobSpec (422) naming the first field over ``limits`` and the maximum."""
    shape = list(spec.input_shape or [])
    check_input_shape(shape, limits)
    per_sample = math.prod(shape[1:]) if shape else 1
    for i, batch in enumerate(spec.latency_batch_sizes):
        field = f"latency_batch_sizes[{i}]"
        if batch > limits.max_batch_size:
            raise _over(field, batch, limits.max_batch_size, "batch size")
        if batch * per_sample > limits.max_input_elements:
            raise _over(field, batch * per_sample, limits.max_input_elements, "input elements at that batch")
    if spec.latency_runs > limits.max_latency_runs:
        raise _over("latency_runs", spec.latency_runs, limits.max_latency_runs, "timed runs per batch size")
    _check_seed("seed", spec.seed)
    if spec.finetune is not None:
        _check_seed("finetune.seed", spec.finetune.seed)
        if spec.finetune.epochs > limits.max_finetune_epochs:
            raise _over("finetune.epochs", spec.finetune.epochs, limits.max_finetune_epochs, "epochs")
        for field in ("batch_size", "eval_batch_size"):
            batch = int(getattr(spec.finetune, field))
            if batch > limits.max_batch_size:
                raise _over(f"finetune.{field}", batch, limits.max_batch_size, "batch size")
    if spec.quantize is not None and spec.quantize.calibration_batches > limits.max_calibration_batches:
        raise _over(
            "quantize.calibration_batches",
            spec.quantize.calibration_batches,
            limits.max_calibration_batches,
            "calibration batches",
        )


def _check_seed(field: str, seed: int) -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise InvalidJobSpec(
            f"{field}={seed} is out of range; a seed must lie in [0, 2**63)",
            errors=[{"field": field, "value": seed, "minimum": 0, "maximum": SEED_LIMIT - 1}],
        )


@lru_cache(maxsize=1)
def cuda_present() -> bool:
    """Whether this process sees a CUDA device (an embedded server runs its jobs right here)."""
    import torch

    return bool(torch.cuda.is_available())
