"""The pollers' background loop: an outage in one pass does not end it, and stop wakes its wait."""

from __future__ import annotations

import threading

from core.periodic import PeriodicThread


def test_a_failing_pass_is_logged_and_the_loop_goes_on() -> None:
    calls: list[int] = []
    third = threading.Event()

    def tick() -> float:
        calls.append(len(calls))
        if len(calls) == 1:
            raise ConnectionError("database down")
        if len(calls) == 3:
            third.set()
        return 0.0

    loop = PeriodicThread("test-poller", tick, retry_seconds=lambda: 0.0)
    loop.start()
    try:
        assert third.wait(timeout=60), f"the loop stopped after {len(calls)} passes"
    finally:
        loop.stop()


def test_stop_wakes_a_long_wait() -> None:
    ticked = threading.Event()

    def tick() -> float:
        ticked.set()
        return 3600.0  # the next pass would be an hour away

    loop = PeriodicThread("test-poller", tick, retry_seconds=lambda: 3600.0)
    loop.start()
    assert ticked.wait(timeout=60)
    loop.stop(timeout=60)
    assert loop._thread is not None and not loop._thread.is_alive()
