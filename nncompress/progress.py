"""Progress reporting: the callback type the pipeline calls, and a small display for the CLI.

The pipeline reports ``progress(stage, percent, message)`` where ``percent`` is of the whole job
(0–100, never decreasing). The worker turns these calls into database rows; the CLI shows them
with :class:`ConsoleProgress`.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

__all__ = ["ConsoleProgress", "ProgressFn", "noop_progress"]


class ProgressFn(Protocol):
    """Called as ``progress(stage, percent, message)``; ``percent`` is of the whole job, 0–100."""

    def __call__(self, stage: str, percent: float, message: str | None = None) -> None: ...


def noop_progress(stage: str, percent: float, message: str | None = None) -> None:
    """A :class:`ProgressFn` that ignores every report."""


class ConsoleProgress:
    """Shows progress on a terminal: a redrawn bar on a TTY, one plain line per change otherwise.

    Plain lines keep logs and CI output readable (no carriage returns); the bar keeps a terminal tidy.

    Args:
        stream: where to write; standard error by default, so standard output stays parseable.
        width: characters of the bar.
        tty: force bar (True) or lines (False); None asks ``stream.isatty()``.

    Examples:
        >>> import io
        >>> out = io.StringIO()
        >>> show = ConsoleProgress(out, tty=False)
        >>> show("pruning", 35.0, "l1norm on 3 layers")
        >>> out.getvalue()
        '[ 35%] pruning: l1norm on 3 layers\\n'
    """

    def __init__(self, stream: TextIO | None = None, *, width: int = 30, tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = self.stream.isatty() if tty is None else tty
        self._last: tuple[str, int, str | None] | None = None
        self._started = time.monotonic()

    def __call__(self, stage: str, percent: float, message: str | None = None) -> None:
        pct = max(0, min(100, int(percent)))
        key = (stage, pct, message)
        if key == self._last:
            return
        self._last = key
        text = f"{stage}: {message}" if message else stage
        if self.tty:
            filled = round(self.width * pct / 100)
            bar = "#" * filled + "-" * (self.width - filled)
            elapsed = time.monotonic() - self._started
            # \r plus clear-to-end-of-line redraws in place; the final report ends the line.
            self.stream.write(f"\r\x1b[K[{bar}] {pct:3d}% {elapsed:5.1f}s {text}")
            if pct >= 100:
                self.stream.write("\n")
        else:
            self.stream.write(f"[{pct:3d}%] {text}\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends a bar left short of 100% (a job that failed or timed out), so the next output starts clean."""
        if self.tty and self._last is not None and self._last[1] < 100:
            self.stream.write("\n")
            self.stream.flush()
        self._last = None
