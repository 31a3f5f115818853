"""The stage functions of a job, one per name in :data:`~nncompress.pipeline.stages.STAGES`.

Each takes the :class:`~nncompress.pipeline.state.JobState` and the stage's progress handle, reads
what the stages before it left there and adds its own products. ``run_job`` calls them in order.

Modules: ``load`` (loading), ``compress`` (pruning, speedup, verifying), ``train`` (finetuning,
quantizing), ``report`` (evaluating, exporting).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nncompress.pipeline.stages import STAGES, Stage
from nncompress.pipeline.state import JobState
from nncompress.pipeline.steps.compress import prune, pruning_message, shrink, verify
from nncompress.pipeline.steps.load import load
from nncompress.pipeline.steps.report import evaluate, export
from nncompress.pipeline.steps.train import finetune, finetune_message, quantize, quantize_message

__all__ = ["PIPELINE", "Step"]


def _no_message(state: JobState) -> str | None:
    return None


@dataclass(frozen=True)
class Step:
    """One stage's work: ``run(state, stage)``, and the message its start is reported with."""

    run: Callable[[JobState, Stage], None]
    message: Callable[[JobState], str | None] = _no_message


# In the order of STAGES, which alone names them (zip(strict=True) catches a missing or extra one).
PIPELINE: dict[str, Step] = dict(
    zip(
        STAGES,
        (
            Step(load),
            Step(prune, pruning_message),
            Step(shrink),
            Step(verify),
            Step(finetune, finetune_message),
            Step(quantize, quantize_message),
            Step(evaluate),
            Step(export),
        ),
        strict=True,
    )
)
