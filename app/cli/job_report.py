"""How a job reads on a terminal: a progress line while it runs, then a summary with a before/after
table of its metrics and its artifacts. Shared by the client commands and ``examples/demo.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from nncompress.client import TERMINAL_STATUSES
from nncompress.progress import ConsoleProgress
from nncompress.tables import render_table


class ProgressBar:
    """Shows a polled job's progress (``status: stage``) with the CLI's one progress display."""

    def __init__(self, stream: TextIO) -> None:
        self._show = ConsoleProgress(stream)

    def update(self, job: dict[str, Any]) -> None:
        self._show(str(job.get("status")), float(job.get("progress") or 0.0), job.get("stage"))

    def close(self) -> None:
        self._show.close()


def metric_rows(metrics: dict[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """``(label, before, after)`` rows from a job's ``metrics``; latency gets one row per measured batch."""
    if not metrics:
        return []
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    rows: list[tuple[str, Any, Any]] = [
        ("params", before.get("params"), after.get("params")),
        ("nonzero params", before.get("nonzero_params"), after.get("nonzero_params")),
        ("bytes", _bytes(before), _bytes(after)),
        ("MACs", before.get("macs"), after.get("macs")),
    ]
    lat_b, lat_a = _latencies(before), _latencies(after)
    for key in sorted(set(lat_b) | set(lat_a), key=_batch_order):
        rows.append((f"latency {key} (ms)", lat_b.get(key), lat_a.get(key)))
    return rows


def format_table(
    rows: Sequence[tuple[str, Any, Any]], headers: tuple[str, str, str] = ("", "before", "after")
) -> str:
    """A plain-text before/after table with a change column (after / before)."""
    body = [(label, _fmt(b), _fmt(a), _ratio(b, a)) for label, b, a in rows]
    return render_table([(*headers, "after/before"), *body], align_right=(1, 2, 3))


def format_job(job: dict[str, Any]) -> str:
    """A human summary of a job for `status` and `submit --wait`."""
    running = job.get("status") not in TERMINAL_STATUSES
    lines = [
        f"job {job['id']}: {job['status']}"
        + (f" ({job.get('stage') or '-'}, {float(job.get('progress') or 0):.0f}%)" if running else ""),
        f"  model {job.get('model_id')}  attempt {job.get('attempt')}  created {job.get('created_at')}",
    ]
    if job.get("error"):
        lines.append(f"  error [{job['error'].get('type')}]: {job['error'].get('message')}")
    rows = metric_rows(job.get("metrics"))
    if rows:
        lines += ["", *("  " + line for line in format_table(rows).splitlines())]
    if job.get("artifacts"):
        lines.append("")
        for a in job["artifacts"]:
            lines.append(f"  {a['name']:<24} {a['size_bytes']:>12,} bytes  sha256 {a['sha256'][:16]}…")
    return "\n".join(lines)


def format_event(event: dict[str, Any]) -> str:
    """One line per recorded transition: time, status, stage, progress, type and message."""
    progress = "" if event.get("progress") is None else f"{float(event['progress']):.0f}%"
    what = event.get("type", "")
    if event.get("message"):
        what += f": {event['message']}"
    status, stage = event.get("status") or "", event.get("stage") or "-"
    return f"  {event.get('at')}  {status:<9}  {stage:<10} {progress:>4}  {what}"


def _bytes(m: dict[str, Any]) -> Any:
    return m.get("bytes", m.get("state_dict_bytes"))


def _latencies(m: dict[str, Any]) -> dict[str, float]:
    """Latency per batch as ``{"batch 1": ms}`` from ``latency_ms`` (a dict) or ``latency`` (a list)."""
    out: dict[str, float] = {}
    raw = m.get("latency_ms")
    if isinstance(raw, dict):
        for key, value in raw.items():
            ms = value.get("median_ms", value.get("median")) if isinstance(value, dict) else value
            if isinstance(ms, (int, float)):
                out[_batch_label(key)] = float(ms)
    for entry in m.get("latency") or []:
        if isinstance(entry, dict) and "batch_size" in entry and "median_ms" in entry:
            out[f"batch {entry['batch_size']}"] = float(entry["median_ms"])
    return out


def _batch_label(key: str) -> str:
    digits = "".join(ch for ch in str(key) if ch.isdigit())
    return f"batch {digits}" if digits else str(key)


def _batch_order(label: str) -> tuple[int, str]:
    digits = "".join(ch for ch in label if ch.isdigit())
    return (int(digits) if digits else 1 << 30, label)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def _ratio(before: Any, after: Any) -> str:
    ok = isinstance(before, (int, float)) and isinstance(after, (int, float)) and not isinstance(before, bool)
    return f"{after / before:.2f}x" if ok and before else ""
