"""Speedup: masks -> a physically smaller model, verified against the masked model.

Public API: :func:`speedup` (functional), :class:`ModelSpeedup` (NNI-compatible), :func:`apply_kept_indices`
(replays a recorded pruning on a fresh instance, for artifact loading) and :func:`verify_equivalence`.
"""

import sys
import types
from typing import Any

from nncompress.speedup.api import apply_kept_indices, speedup
from nncompress.speedup.nni import ModelSpeedup
from nncompress.speedup.reshape import Rewrite
from nncompress.speedup.result import GroupReport, SpeedupResult
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


class _CallablePackage(types.ModuleType):
    """Makes ``nncompress.speedup(...)`` call :func:`speedup`.

    Importing this package binds the *package* to the attribute ``nncompress.speedup``, which shadows the
    lazily re-exported *function* of the same name; a callable package keeps ``from nncompress import
    speedup; speedup(model, masks, x)`` working either way.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> SpeedupResult:
        return speedup(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
