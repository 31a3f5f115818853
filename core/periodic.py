"""A background loop for the service's pollers (outboxes, the job reconciler)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = ["PeriodicThread"]


class PeriodicThread:
    """Calls ``tick`` on a daemon thread until stopped.

    ``tick`` returns how long to wait before the next call (0: go on at once). A tick that raises is
    logged and followed by ``retry_seconds()`` of waiting: a database or broker outage must not end the
    loop. ``stop`` wakes the wait at once.
    """

    def __init__(self, name: str, tick: Callable[[], float], retry_seconds: Callable[[], float]) -> None:
        self.name = name
        self._tick = tick
        self._retry_seconds = retry_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self._tick()
            except Exception:
                log.exception("%s pass failed", self.name)
                wait = self._retry_seconds()
            if wait > 0:
                self._stop.wait(wait)
