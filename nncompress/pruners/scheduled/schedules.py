"""The schedule, apart from the pruning: which share of the final target each step reaches.

* linear: ``f(t) = t / n``;
* AGP (Zhu & Gupta, 2017): ``f(t) = 1 − (1 − t/n)³``, i.e. ``s_t = s_f + (s_i − s_f)(1 − t/n)³`` with
  ``s_i = 0``: big steps first, while the network still has redundancy, small ones near the end.
"""

from __future__ import annotations

from nncompress.errors import ConfigError

__all__ = ["SCHEDULES", "schedule_fractions"]

SCHEDULES: tuple[str, ...] = ("linear", "agp")


def schedule_fractions(schedule: str, steps: int) -> list[float]:
    """Share of the final target reached after each step.

    Args:
        schedule: ``"linear"`` or ``"agp"``.
        steps: number of steps, ``>= 1``.

    Returns:
        ``steps`` increasing fractions ending at 1.0.

    Raises:
        ConfigError: unknown schedule or ``steps < 1``.

    Example:
        >>> schedule_fractions("agp", 3)
        [0.7037037037037037, 0.9629629629629629, 1.0]
    """
    if schedule not in SCHEDULES:
        raise ConfigError(
            f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}",
            key="schedule",
            value=schedule,
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}", key="steps", value=steps)
    if schedule == "linear":
        return [t / steps for t in range(1, steps + 1)]
    return [1.0 - (1.0 - t / steps) ** 3 for t in range(1, steps + 1)]
