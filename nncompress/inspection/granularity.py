"""What granularity a pruner means by ``'default'``, and the pruner names preflight accepts.

The names and granularities come from the pruner classes (``nncompress.pruners.PRUNERS``, each
class's ``default_granularity``); only NNI's other spellings of them are listed here.
"""

from __future__ import annotations

import re

from nncompress.config import LayerTarget
from nncompress.config.messages import did_you_mean
from nncompress.errors import ConfigError
from nncompress.pruners.registry import PRUNERS

__all__ = ["ALIASES", "effective_granularity", "pruner_granularity", "resolve_pruner"]

# NNI's class names and short forms, by the registry name they stand for (matched after folding case,
# punctuation and a "Pruner" suffix, so "ActivationAPoZRankPruner" and "activation_apoz_rank" both work).
ALIASES: dict[str, str] = {
    "taylorfoweight": "taylorfo",
    "taylor": "taylorfo",
    "activationapozrank": "apoz",
    "activationmeanrank": "mean_activation",
    "meanrank": "mean_activation",
}
# NNI's scheduled pruners iterate a channel pruner over several steps.
SCHEDULED: dict[str, str] = {"linear": "out_channel", "agp": "out_channel"}


def _fold(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower()).removesuffix("pruner")


def pruner_granularity() -> dict[str, str]:
    """``{pruner name: the granularity its 'default' means}`` for every name preflight accepts."""
    table = {name: cls.default_granularity for name, cls in PRUNERS.items()}
    return table | SCHEDULED


def _names() -> dict[str, str]:
    """Folded spelling -> canonical name."""
    names = {_fold(name): name for name in pruner_granularity()}
    return names | {alias: target for alias, target in ALIASES.items()}


def resolve_pruner(pruner: str) -> str:
    """The canonical name of ``pruner`` (``'L1NormPruner'`` → ``'l1norm'``).

    Args:
        pruner: a pruner name in any case, with or without the ``Pruner`` suffix, or one of NNI's
            other spellings (:data:`ALIASES`).

    Returns:
        The registry name (or ``linear``/``agp`` for NNI's scheduled pruners).

    Raises:
        ConfigError: the pruner is unknown (with a did-you-mean hint).
    """
    names = _names()
    key = _fold(pruner)
    if key not in names:
        known = list(pruner_granularity())
        hint = did_you_mean(key, names)
        raise ConfigError(
            f"pruner: unknown pruner {pruner!r}"
            + (f"; {hint}" if hint else "")
            + f" Known: {', '.join(known)}",
            entry=None,
            key="pruner",
            value=pruner,
            expected="one of " + ", ".join(known),
        )
    return names[key]


def effective_granularity(target: LayerTarget, pruner: str) -> str:
    """The target's granularity, or the pruner's own when the config says ``'default'``.

    Args:
        target: the resolved config target.
        pruner: a canonical name from :func:`resolve_pruner`.
    """
    return pruner_granularity()[pruner] if target.granularity == "default" else target.granularity
