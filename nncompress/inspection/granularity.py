"""What granularity a pruner means by ``'default'``, and the pruner names preflight accepts."""

from __future__ import annotations

import re

from nncompress.config import LayerTarget
from nncompress.config.messages import did_you_mean
from nncompress.errors import ConfigError

__all__ = ["PRUNER_GRANULARITY", "effective_granularity", "resolve_pruner"]

# What granularity 'default' means for each pruner (NNI: "the pruner decides"). Level masks single
# weights; every other pruner here removes whole output channels. Scheduled pruners (linear, agp)
# iterate a channel pruner.
PRUNER_GRANULARITY: dict[str, str] = {
    "level": "element",
    "l1norm": "out_channel",
    "l2norm": "out_channel",
    "fpgm": "out_channel",
    "slim": "out_channel",
    "taylorfo": "out_channel",
    "taylorfoweight": "out_channel",
    "taylor": "out_channel",
    "activationapozrank": "out_channel",
    "apoz": "out_channel",
    "activationmeanrank": "out_channel",
    "meanrank": "out_channel",
    "linear": "out_channel",
    "agp": "out_channel",
}


def resolve_pruner(pruner: str) -> str:
    """The key of ``pruner`` in :data:`PRUNER_GRANULARITY` (``'L1NormPruner'`` → ``'l1norm'``).

    Args:
        pruner: a pruner name in any case, with or without the ``Pruner`` suffix.

    Returns:
        The normalised key.

    Raises:
        ConfigError: the pruner is unknown (with a did-you-mean hint).
    """
    key = re.sub(r"[^a-z0-9]", "", pruner.lower())
    key = key.removesuffix("pruner")
    if key not in PRUNER_GRANULARITY:
        hint = did_you_mean(key, PRUNER_GRANULARITY)
        raise ConfigError(
            f"pruner: unknown pruner {pruner!r}"
            + (f"; {hint}" if hint else "")
            + f" Known: {', '.join(PRUNER_GRANULARITY)}",
            entry=None,
            key="pruner",
            value=pruner,
            expected="one of " + ", ".join(PRUNER_GRANULARITY),
        )
    return key


def effective_granularity(target: LayerTarget, pruner_key: str) -> str:
    """The target's granularity, or the pruner's own when the config says ``'default'``."""
    return PRUNER_GRANULARITY[pruner_key] if target.granularity == "default" else target.granularity
