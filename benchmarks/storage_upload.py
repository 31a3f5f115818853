"""Upload throughput and API memory: a large model upload to the local folder vs an S3-compatible store.

One API process (``uvicorn app.main:create_app --factory``, embedded mode) per storage, the same file
(safetensors weights of a torchvision architecture, ~1.2 GiB for ``vit_l_16``) streamed by httpx:

- wall time of ``POST /v1/models`` (upload, intake checks, commit: a rename, or the multipart upload's
  completion and server-side copy) and the bytes per second it makes;
- the API process's peak resident memory (``VmHWM``) over its resident memory before the upload.

The S3 store is moto's standalone server, started here on 127.0.0.1 (a Python server: a real MinIO or S3
would take the parts faster). Prints a markdown table; ``--json`` writes the numbers too.

Usage:
    .venv/bin/python benchmarks/storage_upload.py [--architecture torchvision/vit_l_16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.3)


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _weights(architecture: str, folder: Path) -> Path:
    from safetensors.torch import save_file

    from nncompress.models import get

    path = folder / "weights.safetensors"
    save_file(get(architecture).build().state_dict(), str(path))
    return path


def _measure(name: str, env: dict[str, str], weights: Path, architecture: str, work: Path) -> dict[str, Any]:
    port = _free_port()
    log = (work / f"api-{name}.log").open("wb")
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/healthz", api, f"the API ({name})")
        before = _status_kib(api.pid, "VmRSS")
        size = weights.stat().st_size
        started = time.perf_counter()
        with weights.open("rb") as fh, httpx.Client(timeout=1800) as client:
            response = client.post(
                f"http://127.0.0.1:{port}/v1/models",
                files={"file": ("weights.safetensors", fh, "application/octet-stream")},
                data={"architecture": architecture, "format": "safetensors"},
            )
        seconds = time.perf_counter() - started
        if response.status_code != 201:
            raise SystemExit(f"{name}: {response.status_code} {response.text[:500]}")
        peak = _status_kib(api.pid, "VmHWM")
        return {
            "storage": name,
            "bytes": size,
            "seconds": round(seconds, 2),
            "mib_per_s": round(size / seconds / 2**20, 1),
            "rss_before_mib": round(before / 1024, 1),
            "peak_rss_mib": round(peak / 1024, 1),
            "peak_over_before_mib": round((peak - before) / 1024, 1),
        }
    finally:
        api.terminate()
        api.wait(timeout=60)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--architecture", default="torchvision/vit_l_16")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nncompress-storage-bench-") as tmp:
        work = Path(tmp)
        weights = _weights(args.architecture, work)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("NNCOMPRESS_", "AWS_"))}
        base.update(
            NNCOMPRESS_DATABASE_URL=f"sqlite:///{work / 'db.sqlite'}",
            NNCOMPRESS_STORAGE_DIR=str(work / "storage"),
            NNCOMPRESS_MAX_UPLOAD_BYTES=str(weights.stat().st_size + 2**20),
        )
        s3_port = _free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            endpoint = f"http://127.0.0.1:{s3_port}"
            _wait(endpoint, moto, "moto's S3 server")
            s3_env = {
                **base,
                "NNCOMPRESS_STORAGE_URL": "s3://bench/nncompress",
                "NNCOMPRESS_CACHE_DIR": str(work / "cache"),
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
            import boto3

            boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
            ).create_bucket(Bucket="bench")
            rows = [
                _measure("local folder", base, weights, args.architecture, work),
                _measure("S3 (moto server)", s3_env, weights, args.architecture, work),
            ]
        finally:
            moto.kill()
            moto.wait()
    print("| storage | MiB | seconds | MiB/s | API RSS before | API peak RSS | peak − before |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['storage']} | {r['bytes'] / 2**20:.0f} | {r['seconds']} | {r['mib_per_s']} | "
            f"{r['rss_before_mib']} MiB | {r['peak_rss_mib']} MiB | {r['peak_over_before_mib']} MiB |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
