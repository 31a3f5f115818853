"""HTTP load benchmark of the API: throughput and latency of the hot endpoints against ``/healthz``.

Starts the API (uvicorn, 1 or more worker processes) in embedded mode (SQLite, no key) or
distributed mode (PostgreSQL + Redis, an API key), with NO job worker, so the figures are the API's
own cost (queued jobs stay queued). Then it drives each endpoint for a fixed time from a closed-loop
load generator (N keep-alive connections, each sending its next request when the previous answer
arrived) and prints one markdown table per configuration:

    | endpoint | req/s | p50 ms | p99 ms | share of /healthz | server CPU ms/req |

``/healthz`` (a sync route: the framework's own cost, threadpool hop included) is measured first and
last in the same run; the share is against their mean, so a machine loaded by something else moves
both sides. The generator is written here (asyncio on raw sockets, uvloop when installed) because wrk
is not always installed; it costs the client far less than an HTTP library would, but it shares the
machine's cores with the server, like wrk did.

Usage:
    .venv/bin/python benchmarks/api_load.py [--modes embedded distributed] [--workers 1 2]
        [--duration 10] [--connections 8]

Distributed mode needs PostgreSQL (``--pg``, trust auth; a scratch database is created and dropped)
and Redis (``--redis``). Each configuration uses fresh storage and a fresh database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
MODEL_FILE = ROOT / "nncompress" / "data" / "mnist_net.safetensors"
# The seed config of the first measurement (and of the old wrk script).
SUBMIT_BODY = {
    "pruner": "l1norm",
    "speedup": True,
    "device": "cpu",
    "input_shape": [1, 1, 28, 28],
    "config_list": [
        {"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]},
        {"exclude": True, "op_names": ["fc2"]},
    ],
}
LIST_LIMIT = 20


# --------------------------------------------------------------------------------------------------
# The load generator
# --------------------------------------------------------------------------------------------------


@dataclass
class Result:
    endpoint: str
    requests: int
    seconds: float
    latencies_ms: list[float]
    statuses: dict[int, int]
    server_cpu_s: float = 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000.0 * self.server_cpu_s / max(1, self.requests)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _connection(port: int, request: bytes, deadline: float, warm_until: float, out: Result) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            start = time.perf_counter()
            if start >= deadline:
                return
            writer.write(request)
            status = await _read_response(reader)
            end = time.perf_counter()
            if start >= warm_until:  # the first moments (connection set-up, caches) are not timed
                out.requests += 1
                out.latencies_ms.append((end - start) * 1000.0)
                out.statuses[status] = out.statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _drive(port: int, request: bytes, endpoint: str, seconds: float, connections: int) -> Result:
    warm = min(1.0, seconds / 5)
    now = time.perf_counter()
    out = Result(endpoint, 0, seconds, [], {})
    await asyncio.gather(
        *(_connection(port, request, now + warm + seconds, now + warm, out) for _ in range(connections))
    )
    return out


def drive(
    port: int, request: bytes, endpoint: str, seconds: float, connections: int, server_group: int
) -> Result:
    """``connections`` closed-loop clients sending ``request`` for ``seconds`` (after a short warm-up),
    with the CPU time the server's processes spent meanwhile (warm-up included, so a slight overcount)."""
    cpu = group_cpu_seconds(server_group)
    try:
        import uvloop

        result = uvloop.run(_drive(port, request, endpoint, seconds, connections))
    except ImportError:
        result = asyncio.run(_drive(port, request, endpoint, seconds, connections))
    result.server_cpu_s = group_cpu_seconds(server_group) - cpu
    return result


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes of a process group (Linux /proc).

    On a machine other work keeps busy, throughput moves with that load; the CPU a request costs the
    server moves far less, so the table shows both.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


# --------------------------------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------------------------------


def _http(port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _multipart(fields: dict[str, str], file_field: str, path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + path.read_bytes()
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(mode: str, workers: int, args: argparse.Namespace) -> Iterator[tuple[int, dict[str, str], int]]:
    """A running API; yields its port, the headers a client sends (the API key, if any) and its
    process group."""
    work = Path(tempfile.mkdtemp(prefix="nnc-load-"))
    env = {
        **os.environ,
        "NNCOMPRESS_STORAGE_DIR": str(work / "storage"),
        # A benchmark, not a rate-limit test: the limits stay in the path, lifted out of the way.
        "NNCOMPRESS_TENANT_REQUESTS_PER_MINUTE": "100000000",
        "NNCOMPRESS_TENANT_MAX_CONCURRENT_JOBS": "100000000",
        "NNCOMPRESS_LOG_LEVEL": "WARNING",
    }
    db = f"nncompress_load_{os.getpid()}_{mode}_{workers}"
    headers: dict[str, str] = {}
    if mode == "distributed":
        subprocess.run(["psql", args.pg, "-qc", f"CREATE DATABASE {db}"], check=True, capture_output=True)
        base = args.pg.rsplit("/", 1)[0]
        env["DATABASE_URL"] = f"{base}/{db}"
        env["BROKER_URL"] = args.redis
        app = "app.main:create_app"
    else:
        env["DATABASE_URL"] = f"sqlite:///{work}/nncompress.db"
        env.pop("BROKER_URL", None)
        env.pop("NNCOMPRESS_BROKER_URL", None)
        # Embedded, but without the in-process worker: the jobs submitted here stay queued.
        app = "benchmarks.api_load:embedded_without_worker"
    env["NNCOMPRESS_DATABASE_URL"] = env["DATABASE_URL"]
    proc = None
    try:
        subprocess.run(
            [str(ROOT / ".venv/bin/alembic"), "upgrade", "head"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        if mode == "distributed":
            key = (
                subprocess.run(
                    [str(ROOT / ".venv/bin/nncompress"), "keys", "create", "--tenant", "load-bench"],
                    env=env,
                    cwd=ROOT,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            headers["Authorization"] = f"Bearer {key}"
        port = _free_port()
        log = open(work / "server.log", "wb")  # noqa: SIM115 - closed with the work folder
        proc = subprocess.Popen(
            [
                PY,
                "-m",
                "uvicorn",
                app,
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                _http(port, "GET", "/readyz", {})
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit(f"the API did not start; its log:\n{(work / 'server.log').read_text()[-3000:]}")
                time.sleep(0.2)
        yield port, headers, proc.pid
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if mode == "distributed":
            subprocess.run(
                ["psql", args.pg, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True
            )
        shutil.rmtree(work, ignore_errors=True)


def embedded_without_worker() -> Any:
    """uvicorn factory: the embedded API with a dispatcher that runs nothing (see the docstring)."""
    from app.main import create_app

    class Idle:
        def enqueue(self, job_id: str, queue: str | None = None) -> None: ...
        def start(self) -> None: ...
        def stop(self) -> None: ...
        def check(self) -> None: ...

    return create_app(dispatcher=Idle())


# --------------------------------------------------------------------------------------------------
# One configuration
# --------------------------------------------------------------------------------------------------


def run_config(mode: str, workers: int, args: argparse.Namespace) -> list[Result]:
    with server(mode, workers, args) as (port, auth, group):
        body, ctype = _multipart({"architecture": "mnist_net"}, "file", MODEL_FILE)
        model = _http(port, "POST", "/v1/models", {**auth, "Content-Type": ctype}, body)
        submit = json.dumps({"model_id": model["id"], **SUBMIT_BODY}).encode()
        json_headers = {**auth, "Content-Type": "application/json"}
        for _ in range(LIST_LIMIT):  # a full first page for the list endpoint
            job = _http(port, "POST", "/v1/jobs", json_headers, submit)
        poll = f"/v1/jobs/{job['id']}"
        etag = urllib.request.urlopen(
            urllib.request.Request(f"http://127.0.0.1:{port}{poll}", headers=auth), timeout=30
        ).headers.get("ETag")
        cases = [
            ("GET /healthz", build_request("GET", "/healthz", {})),
            ("GET /v1/jobs/{id} (poll)", build_request("GET", poll, auth)),
        ]
        if etag:
            cases.append(
                (
                    "GET /v1/jobs/{id} (poll, If-None-Match → 304)",
                    build_request("GET", poll, {**auth, "If-None-Match": etag}),
                )
            )
        cases += [
            (
                f"GET /v1/jobs?limit={LIST_LIMIT} (list)",
                build_request("GET", f"/v1/jobs?limit={LIST_LIMIT}", auth),
            ),
            ("POST /v1/jobs (submit, seed config)", build_request("POST", "/v1/jobs", json_headers, submit)),
            ("GET /healthz (again)", build_request("GET", "/healthz", {})),
        ]
        results = []
        for name, request in cases:
            results.append(drive(port, request, name, args.duration, args.connections, group))
            time.sleep(0.5)
        return results


def table(mode: str, workers: int, results: list[Result], args: argparse.Namespace) -> str:
    ceiling = statistics.mean(r.rps for r in results if r.endpoint.startswith("GET /healthz"))
    lines = [
        f"### {mode}, uvicorn --workers {workers} ({args.connections} connections, {args.duration:g} s each)",
        "",
        "| endpoint | req/s | p50 ms | p99 ms | share of /healthz | server CPU ms/req | statuses |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        statuses = ", ".join(f"{k}×{v}" for k, v in sorted(r.statuses.items()))
        lines.append(
            f"| `{r.endpoint}` | {r.rps:,.0f} | {r.percentile(0.5):.1f} | {r.percentile(0.99):.1f} | "
            f"{r.rps / ceiling:.2f} | {r.cpu_ms_per_request:.2f} | {statuses} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--modes", nargs="+", default=["embedded", "distributed"], choices=["embedded", "distributed"]
    )
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per endpoint")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--pg",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="a PostgreSQL database to connect to for CREATE/DROP DATABASE",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    print(
        f"# API load, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start\n"
    )
    for mode in args.modes:
        for workers in args.workers:
            results = run_config(mode, workers, args)
            print(table(mode, workers, results, args), "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
