"""Stages of a job: their order, their share of the progress bar, and cancellation between them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from nncompress.errors import NncompressError
from nncompress.progress import ProgressFn

__all__ = ["SPANS", "STAGES", "JobCancelled", "Stage", "StageRunner", "spans_for"]

# The stages of a job, in order, each with its share of a plain job's progress bar in percent: the
# one list of stage names (the pipeline's stage functions, progress reports and resume_from follow
# it). Measured on the seed Net on 1 CPU thread: evaluating (latency at two batch sizes, twice) and
# exporting (ONNX capture) dominate; the training stages' widths come from spans_for.
_PLAIN_WIDTHS: tuple[tuple[str, float], ...] = (
    ("loading", 5.0),
    ("pruning", 20.0),
    ("speedup", 15.0),
    ("verifying", 10.0),
    ("finetuning", 0.0),
    ("quantizing", 0.0),
    ("evaluating", 30.0),
    ("exporting", 20.0),
)

STAGES: tuple[str, ...] = tuple(name for name, _ in _PLAIN_WIDTHS)


def _spans(widths: list[tuple[str, float]]) -> dict[str, tuple[float, float]]:
    """Consecutive ``(start, end)`` percentages for stage widths, ending at exactly 100."""
    total = sum(width for _, width in widths)
    spans: dict[str, tuple[float, float]] = {}
    start = 0.0
    for name, width in widths:
        end = start + 100.0 * width / total
        spans[name] = (start, end)
        start = end
    last = widths[-1][0]
    spans[last] = (spans[last][0], 100.0)  # no float drift at the end
    return spans


# Share of the whole job each stage covers, in percent, for a job that neither trains nor quantizes.
SPANS: dict[str, tuple[float, float]] = _spans(list(_PLAIN_WIDTHS))

# Relative cost of the stages a job may add, against the 100 the plain stages share. Measured on the
# seed Net, 900 training images, 1 CPU thread: an epoch of fine-tuning (~3 s) costs about what the
# whole plain job does; static quantization (export, calibration, fp32-vs-int8 timing) about a third.
_FINETUNE_WEIGHT_PER_EPOCH = 100.0
_QUANTIZE_WEIGHT = 35.0


def spans_for(
    *, finetune_epochs: int = 0, scheduled_epochs: int = 0, quantize: bool = False
) -> dict[str, tuple[float, float]]:
    """Progress spans for one job: stages it skips get no width, training gets most of the bar.

    Args:
        finetune_epochs: epochs of the ``finetuning`` stage (0: skipped).
        scheduled_epochs: epochs of fine-tuning inside scheduled pruning (``pruning`` stage).
        quantize: whether the ``quantizing`` stage runs.
    """
    weights = dict(_PLAIN_WIDTHS)
    weights["finetuning"] = _FINETUNE_WEIGHT_PER_EPOCH * finetune_epochs
    weights["pruning"] += _FINETUNE_WEIGHT_PER_EPOCH * scheduled_epochs
    weights["quantizing"] = _QUANTIZE_WEIGHT if quantize else 0.0
    return _spans(list(weights.items()))


class JobCancelled(NncompressError):
    """The job was asked to stop; raised between stages (``context['stage']`` is the next one)."""

    code = "cancelled"


class Stage:
    """Handle a stage body uses to report progress inside its span."""

    def __init__(self, runner: StageRunner, name: str) -> None:
        self._runner = runner
        self._name = name

    @property
    def name(self) -> str:
        """The stage's name, one of :data:`STAGES`."""
        return self._name

    def update(self, fraction: float, message: str | None = None) -> None:
        """Reports that ``fraction`` (0–1) of this stage is done."""
        low, high = self._runner.spans[self._name]
        self._runner.report(self._name, low + (high - low) * min(1.0, max(0.0, fraction)), message)


class StageRunner:
    """Runs stages in order: checks for cancellation first, then reports start and end percentages."""

    def __init__(
        self,
        progress: ProgressFn,
        should_stop: Callable[[], bool],
        spans: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        self.spans = spans or SPANS
        self._progress = progress
        self._should_stop = should_stop
        self._percent = 0.0
        self.timings: dict[str, float] = {}

    def report(self, stage: str, percent: float, message: str | None) -> None:
        """Forwards a report to the progress callback, never letting the percentage go down."""
        # Never step backwards, whatever a stage reports.
        self._percent = max(self._percent, percent)
        self._progress(stage, self._percent, message)

    @contextmanager
    def stage(self, name: str, message: str | None = None) -> Iterator[Stage]:
        """Context for one stage: refuses to start it when ``should_stop()``, times it, reports its span.

        Raises:
            JobCancelled: the job was asked to stop; ``context['stage']`` is ``name``.
        """
        if self._should_stop():
            raise JobCancelled(f"the job was cancelled before the {name} stage", stage=name)
        low, high = self.spans[name]
        self.report(name, low, message)
        start = time.perf_counter()
        yield Stage(self, name)
        self.timings[name] = time.perf_counter() - start
        self.report(name, high, "done")
