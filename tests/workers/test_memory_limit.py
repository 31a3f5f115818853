"""The job memory limit (``job_memory_mb``): a job over it fails ``memory_limit``; the worker goes on.

Each test runs jobs through the embedded dispatcher (the same claim, supervisor and job process as a
Celery worker) with a small limit, and then a job that fits, which must succeed on the same worker.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from tests.workers.conftest import FAST, SEED_SPEC, TARGET, Jobs, marker_lines, pid_alive
from workers import memory, runner
from workers.dispatch import EmbeddedDispatcher

LIMIT_MB = 256
ENDED = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def sqlite_jobs(sqlite_url: str, tmp_path: Path) -> Iterator[Jobs]:
    jobs = Jobs(sqlite_url, tmp_path / "storage")
    yield jobs
    jobs.engine.dispose()


def _dispatcher(
    jobs: Jobs, *, limit_mb: int, target: str | None = TARGET, **overrides: object
) -> EmbeddedDispatcher:
    settings = Settings(
        database_url=jobs.url, storage_dir=jobs.storage, job_memory_mb=limit_mb, **{**FAST, **overrides}
    )
    dispatcher = EmbeddedDispatcher(settings, jobs.session_factory)
    dispatcher.options = runner.RunnerOptions.from_settings(settings, target=target)
    return dispatcher


def _mib(text: str, label: str) -> float:
    match = re.search(rf"{label} ([\d,]+) MiB", text)
    assert match, text
    return float(match.group(1).replace(",", ""))


def test_a_job_that_holds_more_than_the_limit_is_killed_and_the_next_job_runs(
    sqlite_jobs: Jobs, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    # 768 MiB, written page by page and held: the watchdog must see it (the per-process ceiling,
    # limit + 2 GiB, is far above), so this is the supervisor's kill, not a refused allocation.
    hog = sqlite_jobs.create(workload="hog", mib=768, marker=str(marker), max_attempts=3)
    after = sqlite_jobs.create(workload="sleep", seconds=0.2)
    dispatcher = _dispatcher(sqlite_jobs, limit_mb=LIMIT_MB)
    dispatcher.start()
    try:
        dispatcher.enqueue(hog)
        dispatcher.enqueue(after)
        failed = sqlite_jobs.wait_status(hog, ENDED, 120)
        assert (failed.status, failed.error_type) == ("failed", "memory_limit"), failed.error_message
        assert failed.attempt == 1  # failed for good, not handed back for a retry
        message = failed.error_message or ""
        assert f"limit of {LIMIT_MB} MiB" in message
        assert _mib(message, "held") > LIMIT_MB
        assert sqlite_jobs.wait_status(after, ENDED, 60).status == "succeeded"
        dispatcher.check()
    finally:
        dispatcher.stop()
    ((pid, _),) = marker_lines(marker)
    assert not pid_alive(pid)
    assert [e.type for e in sqlite_jobs.events(hog)][-1] == "failed"


def test_one_huge_allocation_is_refused_at_once_and_the_next_job_runs(sqlite_jobs: Jobs) -> None:
    # 64 GiB in one piece: past the per-process ceiling, so refused before a page is touched (the
    # machine need not have it), whatever the watchdog's timing.
    spike = sqlite_jobs.create(workload="spike", mib=64 * 1024)
    after = sqlite_jobs.create(workload="sleep", seconds=0.2)
    dispatcher = _dispatcher(sqlite_jobs, limit_mb=LIMIT_MB)
    dispatcher.start()
    try:
        dispatcher.enqueue(spike)
        dispatcher.enqueue(after)
        failed = sqlite_jobs.wait_status(spike, ENDED, 60)
        assert (failed.status, failed.error_type) == ("failed", "memory_limit"), failed.error_message
        assert "allocation was refused" in (failed.error_message or "")
        assert f"limit is {LIMIT_MB} MiB" in (failed.error_message or "")
        assert sqlite_jobs.wait_status(after, ENDED, 60).status == "succeeded"
    finally:
        dispatcher.stop()


def test_refusals_are_found_behind_engine_errors_and_gpu_memory_is_not_ours() -> None:
    from nncompress.errors import ConfigError

    refused = RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")
    try:
        try:
            raise refused
        except RuntimeError as exc:
            raise ConfigError(
                "the model does not accept an input of shape [65536]", key="input_shape"
            ) from exc
    except ConfigError as wrapped:
        assert memory.refused_allocation(wrapped) is refused
    assert memory.refused_allocation(MemoryError()) is not None
    assert memory.refused_allocation(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")) is None
    assert memory.refused_allocation(ValueError("can't allocate memory")) is None


def test_no_ceiling_without_a_limit_or_on_cuda() -> None:
    assert memory.apply_process_limit(0, device="cpu") is None
    assert memory.apply_process_limit(256 * memory.MiB, device="cuda:0") is None


@pytest.mark.slow
def test_a_real_pipeline_job_whose_input_blows_past_the_limit_fails_and_the_next_job_succeeds(
    sqlite_jobs: Jobs,
) -> None:
    model_id = sqlite_jobs.upload_seed_model()
    # The seed's MNIST net at a batch of 65,536: conv1's output alone is 65,536 × 20 × 24 × 24 floats
    # (2.8 GiB), over the per-process ceiling of limit + 2 GiB less the libraries' 0.9 GiB.
    big = sqlite_jobs.create(model_id=model_id, **SEED_SPEC, input_shape=[65536, 1, 28, 28])
    small = sqlite_jobs.create(model_id=model_id, **SEED_SPEC)
    dispatcher = _dispatcher(sqlite_jobs, limit_mb=1024, target=None, job_time_limit_seconds=600)
    dispatcher.start()
    try:
        dispatcher.enqueue(big)
        dispatcher.enqueue(small)
        failed = sqlite_jobs.wait_status(big, ENDED, 300)
        assert (failed.status, failed.error_type) == ("failed", "memory_limit"), failed.error_message
        assert "limit is 1,024 MiB" in (failed.error_message or "")
        done = sqlite_jobs.wait_status(small, ENDED, 300)
        assert done.status == "succeeded", (done.error_type, done.error_message)
    finally:
        dispatcher.stop()


def test_group_memory_counts_the_job_process_group() -> None:
    import subprocess
    import sys

    # A process holding 64 MiB, in a group of its own: the sum must include it, and a group that
    # does not exist holds nothing.
    code = "import sys; x = b'\\x01' * (64 << 20); print('ready', flush=True); sys.stdin.read()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        assert memory.group_memory_bytes(proc.pid) >= 64 * memory.MiB
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    assert memory.group_memory_bytes(proc.pid) == 0
