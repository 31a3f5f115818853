"""Speedup: masks -> a physically smaller model, verified against the masked model.

Public API: :func:`speedup` (functional), :class:`ModelSpeedup` (NNI-compatible), :func:`apply_kept_indices`
(replays a recorded pruning on a fresh instance, for artifact loading) and :func:`verify_equivalence`.
"""

from nncompress.speedup.api import GroupReport, SpeedupResult, apply_kept_indices, speedup
from nncompress.speedup.nni import ModelSpeedup
from nncompress.speedup.reshape import Rewrite
from nncompress.speedup.verify import VerificationReport, verify_equivalence

__all__ = [
    "GroupReport",
    "ModelSpeedup",
    "Rewrite",
    "SpeedupResult",
    "VerificationReport",
    "apply_kept_indices",
    "speedup",
    "verify_equivalence",
]
