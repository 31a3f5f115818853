"""Scheduled (iterative) pruning, in the shape torch.ao uses: the schedule apart from the pruning.

* :mod:`.schedules`: which share of the final target each step reaches (linear, AGP);
* :mod:`.step`: one step (prune to that share, then shrink or keep the masks);
* :mod:`.loop`: the steps with fine-tuning between them, the accuracy budget and resuming;
* :mod:`.records`: what is reported per step and in the end;
* :mod:`.nni`: NNI's ``LinearPruner`` / ``AGPPruner`` classes over :func:`scheduled_prune`.
"""

from nncompress.pruners.scheduled.loop import scheduled_prune
from nncompress.pruners.scheduled.nni import AGPPruner, LinearPruner
from nncompress.pruners.scheduled.records import ScheduledProgress, ScheduledResult, StepRecord, weights_bytes
from nncompress.pruners.scheduled.schedules import SCHEDULES, schedule_fractions

__all__ = [
    "SCHEDULES",
    "AGPPruner",
    "LinearPruner",
    "ScheduledProgress",
    "ScheduledResult",
    "StepRecord",
    "schedule_fractions",
    "scheduled_prune",
    "weights_bytes",
]
