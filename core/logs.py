"""Structured logs: one JSON object per line (ts, level, logger, msg, job_id, tenant, request_id).

``NNCOMPRESS_LOG_FORMAT=json`` selects it, ``text`` (the default) keeps human lines. The ids come
from the record's ``extra`` when a call site passes them, else from context variables that the
request middleware (request_id, tenant) and the worker (job_id, tenant) set for the code they run.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
tenant_var: ContextVar[str | None] = ContextVar("tenant", default=None)
job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)

CONTEXT_FIELDS = {"job_id": job_id_var, "tenant": tenant_var, "request_id": request_id_var}
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged too.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, var in CONTEXT_FIELDS.items():
            entry[name] = getattr(record, name, None) or var.get()
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ContextTextFormatter(logging.Formatter):
    """Text lines that still name the job and tenant when known."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [
            f"{n}={v}" for n, var in CONTEXT_FIELDS.items() if (v := getattr(record, n, None) or var.get())
        ]
        return f"{line} [{' '.join(ids)}]" if ids else line


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    """Installs one stderr handler on the root logger (replacing ours from an earlier call)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("nncompress")
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ContextTextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in [h for h in root.handlers if h.get_name() == "nncompress"]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's own handlers would print every line a second time in their format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


@contextmanager
def log_context(**values: str | None) -> Iterator[None]:
    """Sets job_id / tenant / request_id for the log lines of the code inside (this thread or task)."""
    tokens = [(CONTEXT_FIELDS[k], CONTEXT_FIELDS[k].set(v)) for k, v in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
