"""Where the API spends its CPU on one endpoint under load: yappi over every thread of a uvicorn process.

Starts the API in distributed mode as ``benchmarks/api_load.py`` does (fresh PostgreSQL database, Redis,
an API key, one uvicorn process, no job worker), with a factory that runs yappi (CPU clock) while it
serves; drives one endpoint from 8 connections; and writes the profile as a pstats file when the server
stops. yappi inflates CPU 3-4 times, more for code made of many small calls: read proportions.

Usage (yappi is not a dependency of the project: install it next to the venv first):
    .venv/bin/pip install --target /tmp/yappi yappi
    PYTHONPATH=/tmp/yappi .venv/bin/python benchmarks/api_profile.py submit --out /tmp/submit.pstat
    python -c "import pstats; pstats.Stats('/tmp/submit.pstat').sort_stats('tottime').print_stats(40)"

Endpoints: healthz, poll, list, submit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import api_load

FACTORY = "benchmarks.api_profile:profiled_app"


def profiled_app() -> Any:
    """uvicorn factory: the distributed API, profiled from start-up to shutdown into ``$PROFILE_OUT``."""
    import yappi

    from app.main import create_app

    app = create_app()
    serve = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(running: Any) -> AsyncIterator[None]:
        async with serve(running):
            yappi.set_clock_type("cpu")
            yappi.start()
            try:
                yield
            finally:
                yappi.stop()
                yappi.get_func_stats().save(os.environ["PROFILE_OUT"], type="pstat")

    app.router.lifespan_context = lifespan
    return app


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("endpoint", choices=["healthz", "poll", "list", "submit"])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, required=True, help="the pstats file to write")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    os.environ["PROFILE_OUT"] = str(args.out.resolve())
    paths = [str(api_load.ROOT), os.environ.get("PYTHONPATH")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    popen = subprocess.Popen

    def profiled_popen(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        # The server api_load starts, with the profiling factory in place of the plain one.
        return popen([FACTORY if part == "app.main:create_app" else part for part in command], **kwargs)

    api_load.subprocess.Popen = profiled_popen  # type: ignore[assignment,misc]
    with api_load.server("distributed", 1, args) as (port, auth, group):
        body, content_type = api_load._multipart({"architecture": "mnist_net"}, "file", api_load.MODEL_FILE)
        model = api_load._http(port, "POST", "/v1/models", {**auth, "Content-Type": content_type}, body)
        submit = json.dumps({"model_id": model["id"], **api_load.SUBMIT_BODY}).encode()
        json_headers = {**auth, "Content-Type": "application/json"}
        for _ in range(api_load.LIST_LIMIT):
            job = api_load._http(port, "POST", "/v1/jobs", json_headers, submit)
        request = {
            "healthz": api_load.build_request("GET", "/healthz", {}),
            "poll": api_load.build_request("GET", f"/v1/jobs/{job['id']}", auth),
            "list": api_load.build_request("GET", f"/v1/jobs?limit={api_load.LIST_LIMIT}", auth),
            "submit": api_load.build_request("POST", "/v1/jobs", json_headers, submit),
        }[args.endpoint]
        result = api_load.drive(port, request, args.endpoint, args.seconds, 8, group)
    print(
        f"{args.endpoint}: {result.rps:,.0f} req/s, {result.cpu_ms_per_request:.2f} ms CPU/request "
        f"under yappi, statuses {result.statuses}; profile in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
