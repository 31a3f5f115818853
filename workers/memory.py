"""The job's memory limit (``settings.job_memory_mb``): measured by the supervisor, backed by an rlimit.

Two mechanisms, because neither is enough alone:

- **The supervisor's watchdog** (:func:`group_memory_bytes`, called by ``workers.runner`` on every
  poll) sums the proportional anonymous and shared-memory pages (``Pss_Anon + Pss_Shmem`` of
  ``/proc/<pid>/smaps_rollup``) of every process in the job's process group, DataLoader workers
  included, and kills the group once the sum passes the limit. PSS, not RSS: forked DataLoader
  workers share their parent's pages copy-on-write, and RSS would count them once per process. File
  pages are left out: the ~430 MiB of torch's mapped libraries are shared and reclaimable, and would
  otherwise count against every job. It sees what a job holds for longer than a poll (0.5 s).
- **A per-process ceiling** (:func:`apply_process_limit`, called by the job process on itself) for
  what a poll cannot see: one allocation of many GiB is refused at once instead of taking the host in
  the half second before the next sample. It is ``RLIMIT_DATA`` (private writable memory), not
  ``RLIMIT_AS``: measured here with torch 2.14+cu130, ``RLIMIT_AS`` of 1 GiB fails ``import torch``
  (3.2 GiB of mapped address space, mostly libraries), while under ``RLIMIT_DATA`` a refused
  ``torch.ones`` raises ``RuntimeError: DefaultCPUAllocator: can't allocate memory`` and the process
  carries on. ``RLIMIT_DATA`` also counts the libraries' writable segments (``VmData`` is 0.77 GiB
  right after ``import torch``), so the ceiling is the limit plus :data:`LIBRARY_ALLOWANCE`. It is
  not applied to ``cuda`` jobs: the CUDA driver's private mappings under ``RLIMIT_DATA`` were not
  measured (no GPU here), and a ceiling that broke CUDA initialisation would fail every GPU job.

A job over the limit fails with the stable error type ``memory_limit`` (never retried); the worker
goes on with its next job. The kernel's OOM killer is told to prefer the job process over the worker
or the API (``oom_score_adj``), for what both mechanisms miss.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
from pathlib import Path

MiB = 1024 * 1024
MEMORY_LIMIT = "memory_limit"
# Writable data segments of the libraries a job loads, on top of the job's own memory: ``VmData``
# after importing the pipeline (torch, torchvision, onnxruntime) was 0.9 GiB here, and every thread
# adds its stack (8 MiB each for torch's intra-op threads).
LIBRARY_ALLOWANCE = 2048 * MiB
# How strongly the OOM killer should prefer the job process (1000 = first choice).
OOM_SCORE_ADJ = 1000

_PROC = Path("/proc")


def _rollup_bytes(pid: int) -> int | None:
    """``Pss_Anon + Pss_Shmem`` of one process in bytes; None when it is gone or unreadable."""
    try:
        text = (_PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:  # exited between the listing and the read, or not ours to read
        return None
    total = 0
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss_Anon", "Pss_Shmem"):
            total += int(rest.split()[0]) * 1024
    return total


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which may itself hold spaces and parentheses:
        # state ppid pgrp ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def group_memory_bytes(pgid: int) -> int:
    """The memory the process group ``pgid`` holds: the sum of its members' anonymous and shared PSS."""
    return sum(b for pid in _group_members(pgid) if (b := _rollup_bytes(pid)) is not None)


def _vm_data_bytes() -> int:
    for line in (_PROC / "self" / "status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    return 0


def apply_process_limit(limit_bytes: int, *, device: str) -> int | None:
    """Caps this process's private writable memory at ``limit_bytes`` plus the libraries' allowance.

    Called by the job process on itself before it loads anything (a ``preexec_fn`` in the
    supervisor would run between fork and exec in a process with threads, which Python warns
    against). Returns the ceiling set, or None when none was (no limit, or a ``cuda`` job).
    """
    if limit_bytes <= 0 or device.startswith("cuda"):
        return None
    ceiling = _vm_data_bytes() + LIBRARY_ALLOWANCE + limit_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (ceiling, hard))
    return ceiling


def prefer_for_oom_kill() -> None:
    """Makes the kernel's OOM killer pick this process before the worker, the API or the database."""
    with contextlib.suppress(OSError):  # raising one's own score needs no privilege
        (_PROC / "self" / "oom_score_adj").write_text(str(OOM_SCORE_ADJ))


def refused_allocation(exc: BaseException) -> BaseException | None:
    """The allocation failure behind ``exc`` (itself or a cause it wraps), if it is one.

    Engine code wraps exceptions with context (``raise ConfigError(...) from exc``); the refusal is
    found down the ``__cause__``/``__context__`` chain. CUDA out-of-memory is the GPU's, not this
    limit's, and is not matched.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError):
            return current
        if isinstance(current, OSError) and current.errno == errno.ENOMEM:
            return current
        if isinstance(current, RuntimeError) and "can't allocate memory" in str(current):
            return current  # torch's DefaultCPUAllocator
        current = current.__cause__ or current.__context__
    return None


def current_memory_bytes() -> int:
    """This process's anonymous and shared PSS (what the watchdog counts for it)."""
    return _rollup_bytes(os.getpid()) or 0


def format_mib(n: int) -> str:
    return f"{n / MiB:,.0f} MiB"


def over_limit_message(limit_bytes: int, peak_bytes: int) -> str:
    """The error message of a job the watchdog stopped."""
    return (
        f"the job's processes held {format_mib(peak_bytes)} of memory, over the job memory limit of "
        f"{format_mib(limit_bytes)} (NNCOMPRESS_JOB_MEMORY_MB); the job process group was killed"
    )


def refused_message(limit_bytes: int, refusal: BaseException) -> str:
    """The error message of a job whose allocation the per-process ceiling refused."""
    detail = str(refusal).strip().splitlines()[0][:300] if str(refusal).strip() else type(refusal).__name__
    return (
        f"an allocation was refused: the job memory limit is {format_mib(limit_bytes)} "
        f"(NNCOMPRESS_JOB_MEMORY_MB) and the job process held {format_mib(current_memory_bytes())} "
        f"when it asked for more ({detail})"
    )
