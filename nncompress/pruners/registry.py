"""Pruner names, as the service and the CLI spell them, mapped to their classes.

Each class carries its own name (``L1NormPruner.name == "l1norm"``); this module only lists the
classes a job may ask for, in the order they are offered.
"""

from __future__ import annotations

import difflib

from nncompress.errors import ConfigError
from nncompress.pruners.activation import ActivationAPoZRankPruner, ActivationMeanRankPruner
from nncompress.pruners.base import Pruner
from nncompress.pruners.level import LevelPruner
from nncompress.pruners.norm import FPGMPruner, L1NormPruner, L2NormPruner
from nncompress.pruners.slim import SlimPruner
from nncompress.pruners.taylor import TaylorFOWeightPruner

__all__ = ["PRUNERS", "get_pruner"]

# Listed rather than collected by Pruner.__init_subclass__: the order is the one users see (error
# messages, the dashboard), independent of which module happens to be imported first, and a
# subclass defined elsewhere (a test, a user's experiment) does not join the service's list.
_REGISTERED: tuple[type[Pruner], ...] = (
    LevelPruner,
    L1NormPruner,
    L2NormPruner,
    FPGMPruner,
    SlimPruner,
    TaylorFOWeightPruner,
    ActivationAPoZRankPruner,
    ActivationMeanRankPruner,
)

PRUNERS: dict[str, type[Pruner]] = {cls.name: cls for cls in _REGISTERED}


def get_pruner(name: str) -> type[Pruner]:
    """The pruner class called ``name``.

    Args:
        name: a registry name (:data:`PRUNERS`), e.g. ``"l1norm"``.

    Returns:
        The pruner class; its ``name`` is ``name``.

    Raises:
        ConfigError: unknown name; the message lists the known ones.
    """
    try:
        return PRUNERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, PRUNERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown pruner {name!r}{hint}; known: {', '.join(PRUNERS)}",
            key="pruner",
            value=name,
            expected=list(PRUNERS),
        ) from None
