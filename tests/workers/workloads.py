"""Job functions for the worker tests, run inside the real job child process (``--target``).

They stand in for the pipeline so the tests can make a job slow, crash, fail or count its runs;
what they exercise is the machinery around them: claim, lease, child process, cancel, kill.
The job's ``spec["workload"]`` picks one; every run appends ``<pid> <attempt> <resume_from>`` to
``spec["marker"]`` so a test can count executions and find the job process.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from workers.child import JobContext, JobOutput


class Cancelled(Exception):
    """What the pipeline raises when ``should_stop()`` turns true (stable code ``cancelled``)."""

    code = "cancelled"

    def __init__(self) -> None:
        super().__init__("stopped on request")
        self.message = "stopped on request"


class BadInput(Exception):
    """An engine error: a stable code and a message for the user."""

    code = "invalid_config"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SlowPids:
    """A map-style dataset whose items are the pid of the DataLoader worker that produced them."""

    def __len__(self) -> int:
        return 1_000_000

    def __getitem__(self, index: int) -> int:
        time.sleep(0.01)
        return os.getpid()


def _dataloader(ctx: JobContext, pids_file: Path) -> None:
    # DataLoader worker processes are forbidden in daemonic processes (a Celery prefork child); the
    # job process is no daemon, so this must work there.
    from torch.utils.data import DataLoader

    seen: set[int] = set()
    for batch in DataLoader(SlowPids(), batch_size=4, num_workers=2):
        new = set(batch.tolist()) - seen
        if new:
            seen |= new
            with pids_file.open("a") as fh:
                fh.writelines(f"{pid}\n" for pid in new)
        ctx.progress("pruning", 50.0, None)
        if ctx.should_stop():
            raise Cancelled()


MiB = 1024 * 1024


def _hog(ctx: JobContext, mib: int) -> None:
    """Grows to ``mib`` MiB in 16 MiB steps, every page written, then holds it until stopped."""
    held = []
    for _ in range(mib // 16):
        held.append(b"\x01" * (16 * MiB))
    while not ctx.should_stop():
        ctx.progress("pruning", 50.0, f"holding {len(held) * 16} MiB")
        time.sleep(0.05)
    raise Cancelled()


def run(ctx: JobContext) -> JobOutput:
    spec = ctx.job.spec
    marker = spec.get("marker")
    if marker:
        with open(marker, "a") as fh:
            fh.write(f"{os.getpid()} {ctx.job.attempt} {ctx.resume_from or '-'}\n")
    kind = spec.get("workload", "sleep")
    if kind == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if kind == "exit":
        os._exit(int(spec.get("code", 3)))
    if kind == "bad_input":
        raise BadInput("entry 0: 'sparsity' must be in (0, 1), got 2")
    if kind == "boom":
        raise RuntimeError("unexpected")
    if kind == "dataloader":
        _dataloader(ctx, Path(spec["pids_file"]))
    if kind == "hog":
        _hog(ctx, int(spec["mib"]))
    if kind == "spike":
        bytearray(int(spec["mib"]) * MiB)  # one allocation, refused whole or not at all
    seconds = float(spec.get("seconds", 0.5))
    deadline = time.monotonic() + seconds
    stages = ["loading", "pruning", "speedup"]
    start = time.monotonic()
    while (now := time.monotonic()) < deadline:
        done = (now - start) / seconds
        ctx.progress(stages[min(int(done * len(stages)), len(stages) - 1)], 100 * done, None)
        if ctx.should_stop():
            raise Cancelled()
        time.sleep(0.05)
    out = Path(ctx.out_dir) / "report.json"
    out.write_text('{"ok": true}')
    return JobOutput(
        metrics={"before": {"params": 10}, "after": {"params": 5}},
        result={"attempt": ctx.job.attempt},
        artifacts=[ctx.artifact(out, media_type="application/json")],
    )
