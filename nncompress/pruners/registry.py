"""Pruner names, as the service and the CLI spell them, mapped to their classes."""

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

PRUNERS: dict[str, type[Pruner]] = {
    "level": LevelPruner,
    "l1norm": L1NormPruner,
    "l2norm": L2NormPruner,
    "fpgm": FPGMPruner,
    "slim": SlimPruner,
    "taylorfo": TaylorFOWeightPruner,
    "apoz": ActivationAPoZRankPruner,
    "mean_activation": ActivationMeanRankPruner,
}


def get_pruner(name: str) -> type[Pruner]:
    """The pruner class called ``name``.

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
