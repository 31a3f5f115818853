"""The error raised when a fine-tuning run is asked to stop."""

from __future__ import annotations

from nncompress.errors import NncompressError

__all__ = ["FinetuneCancelled"]


class FinetuneCancelled(NncompressError):
    """``should_stop()`` said stop; raised between two training steps.

    ``context`` holds ``epoch`` (1-based, the epoch that was running) and ``step`` (the step about
    to run) and ``finished_epochs`` (what a resume starts after). The code is the same as the
    pipeline's cancellation, so the service reports both the same way.
    """

    code = "cancelled"
