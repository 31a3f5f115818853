"""The end-to-end demo: compress the seed's MNIST network through the service and compare before/after.

Run it with ``scripts/demo.sh`` (which installs the project first) or, once installed::

    python examples/demo.py                      # starts its own embedded server on a free port
    python examples/demo.py --out demo-output    # keep the downloaded artifacts
    python examples/demo.py --server http://127.0.0.1:8000   # use a server that is already running

What it does, as a user of the service would:
  1. starts ``nncompress serve`` (SQLite + local files in a temporary folder) and waits for ``/readyz``;
  2. uploads the shipped, trained ``mnist_net`` weights (safetensors);
  3. submits the seed's config_list with the L1-norm pruner and speedup, and shows the job's progress;
  4. downloads the artifacts (sha256-checked), reloads the compressed model without pickle
     (``nncompress.io.load_compressed``) and runs the ONNX export with ONNX Runtime;
  5. measures accuracy on the shipped 1,000-image MNIST subset and prints a before/after table;
  6. stops the server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.cli.job_report import ProgressBar, format_table, metric_rows
from nncompress.client import Client, ServiceError, ServiceUnreachable, WaitTimeout
from nncompress.data import load_mnist_subset, mnist_net_weights_path
from nncompress.finetune.evaluate import score_batches

ARCHITECTURE = "mnist_net"
# The seed's config_list: half the channels/features of every Conv2d and Linear, except the classifier.
SEED_CONFIG_LIST: list[dict[str, Any]] = [
    {"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]},
    {"exclude": True, "op_names": ["fc2"]},
]
PRUNER = "l1norm"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nncompress-demo-") as tmp:
        out_dir = Path(args.out) if args.out else Path(tmp) / "artifacts"
        hint = "" if args.out else "; deleted at the end: pass --out DIR to keep them"
        try:
            if args.server:
                with Client(args.server) as client:
                    summary = run(client, out_dir, deadline=args.timeout, keep_hint=hint)
            else:
                with embedded_server(Path(tmp) / "server", ready_timeout=args.ready_timeout) as client:
                    summary = run(client, out_dir, deadline=args.timeout, keep_hint=hint)
        except (ServiceError, DemoError, WaitTimeout) as exc:
            print(f"\ndemo failed: {exc}", file=sys.stderr)
            return 1
    summary["demo_seconds"] = round(time.monotonic() - started, 1)
    job_s = summary["job_seconds"]
    print(
        f"\ndemo finished in {summary['demo_seconds']:.1f}s" + (f" (the job ran {job_s}s)" if job_s else "")
    )
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2))
    return 0 if summary["status"] == "succeeded" else 1


class DemoError(Exception):
    """A step of the demo failed in a way the server did not describe (startup, artifacts, reload)."""


def run(client: Client, out_dir: Path, *, deadline: float, keep_hint: str = "") -> dict[str, Any]:
    """Steps 2-5 against a running server; returns the figures it printed (for tests and --summary)."""
    weights = mnist_net_weights_path()
    model = client.upload_model(weights, architecture=ARCHITECTURE)
    print(
        f"uploaded {weights.name} as model {model['id']} ({model['size_bytes']:,} bytes, {model['format']})"
    )
    job = client.create_job(
        model["id"],
        SEED_CONFIG_LIST,
        pruner=PRUNER,
        speedup=True,
        device="cpu",
        input_shape=[1, 1, 28, 28],
        idempotency_key=f"demo-{model['sha256'][:16]}-{os.getpid()}",
    )
    print(f"submitted job {job['id']}: {PRUNER} pruner, config_list {json.dumps(SEED_CONFIG_LIST)}")
    bar = ProgressBar(sys.stdout)
    job = client.wait(job["id"], on_progress=bar.update, deadline=deadline)
    bar.close()
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        raise DemoError(
            f"job {job['id']} ended {job['status']}: [{error.get('type')}] {error.get('message')}"
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {a["name"]: client.download_artifact(job["id"], a["name"], out_dir) for a in job["artifacts"]}
    print(f"downloaded {', '.join(sorted(files))} to {out_dir} (sha256 verified{keep_hint})")

    images, labels = load_mnist_subset()
    original = _load_original(weights)
    compressed = _load_compressed(out_dir)
    acc_before = accuracy(original, images, labels)
    acc_after = accuracy(compressed, images, labels)
    acc_onnx = _onnx_accuracy(files["model.onnx"], images, labels) if "model.onnx" in files else None

    params_before = sum(p.numel() for p in original.parameters())
    params_after = sum(p.numel() for p in compressed.parameters())
    rows = metric_rows(job.get("metrics"))
    rows.append(("model.safetensors on disk", weights.stat().st_size, _size(files.get("model.safetensors"))))
    if "model.onnx" in files:
        rows.append(("model.onnx on disk", None, _size(files["model.onnx"])))
    rows.append((f"accuracy, {len(labels)} MNIST test images", f"{acc_before:.1%}", f"{acc_after:.1%}"))
    if acc_onnx is not None:
        rows.append(("accuracy, ONNX Runtime", None, f"{acc_onnx:.1%}"))
    print()
    print(format_table(rows, headers=("", "original", "compressed")))

    return {
        "status": job["status"],
        "job_id": job["id"],
        "job_seconds": _job_seconds(job),
        "artifacts": sorted(files),
        "params_before": params_before,
        "params_after": params_after,
        "accuracy_before": acc_before,
        "accuracy_after": acc_after,
        "accuracy_onnx": acc_onnx,
        "metrics": job.get("metrics"),
    }


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 250) -> float:
    """Top-1 accuracy of ``model`` on ``images``."""
    model.eval()
    batches = [
        (images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(images), batch_size)
    ]
    return score_batches(model, batches).top1


@contextmanager
def embedded_server(data_dir: Path, *, ready_timeout: float = 120.0) -> Any:
    """Runs ``nncompress serve`` as a child process on a free port; yields a client; stops it on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log_path = data_dir / "server.log"
    cmd = [sys.executable, "-m", "nncompress.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--data-dir", str(data_dir), "--log-level", "warning"]
    print(f"starting the embedded server: nncompress serve --port {port} --data-dir {data_dir}")
    with log_path.open("wb") as log:
        # Its own session, so stopping it can reach anything it started that was left behind.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with Client(f"http://127.0.0.1:{port}", timeout=30) as client:
            _wait_ready(client, proc, log_path, ready_timeout)
            yield client
    finally:
        _stop(proc)


def _wait_ready(client: Client, proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise DemoError(f"the server exited with status {proc.returncode}:\n{_tail(log_path)}")
        try:
            client.readyz()
            print(f"server ready after {time.monotonic() - t0:.1f}s")
            return
        except ServiceError as exc:  # not listening yet, or listening but not ready (503)
            if time.monotonic() - t0 > timeout:
                raise DemoError(
                    f"server not ready after {timeout:.0f}s ({exc}):\n{_tail(log_path)}"
                ) from None
            if not isinstance(exc, ServiceUnreachable) and exc.status not in (502, 503):
                raise
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets uvicorn run the lifespan shutdown (stopping the embedded worker); SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print("server did not stop within 30s; killing it", file=sys.stderr)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything of its session still alive
    proc.wait()
    print("server stopped")


def _free_port() -> int:
    # Ask the OS for a free port, then release it for the server; another process could take it in
    # between, in which case the server exits and the demo says so.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _load_original(weights: Path) -> nn.Module:
    from safetensors.torch import load_file

    from nncompress.models import get

    model = get(ARCHITECTURE).build()
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def _load_compressed(folder: Path) -> nn.Module:
    from nncompress.io import load_compressed

    try:
        return load_compressed(folder)
    except Exception as exc:  # report which artifact failed, whatever the reason
        raise DemoError(f"reloading the compressed model from {folder} failed: {exc}") from exc


def _onnx_accuracy(path: Path, images: torch.Tensor, labels: torch.Tensor) -> float:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    fixed = feed.shape[0] if isinstance(feed.shape[0], int) else None  # a fixed batch dim is honoured

    def forward(chunk: torch.Tensor) -> torch.Tensor:
        x = chunk.numpy()
        if fixed is not None and len(x) < fixed:  # pad the last fixed-size batch
            x = np.concatenate([x, np.zeros((fixed - len(x), *x.shape[1:]), x.dtype)])
        return torch.from_numpy(np.asarray(session.run(None, {feed.name: x})[0])[: len(chunk)])

    batch = fixed or 250
    batches = [(images[i : i + batch], labels[i : i + batch]) for i in range(0, len(images), batch)]
    return score_batches(forward, batches).top1


def _size(path: Path | None) -> int | None:
    return path.stat().st_size if path is not None else None


def _job_seconds(job: dict[str, Any]) -> float | None:
    try:
        start = datetime.fromisoformat(str(job["started_at"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(job["finished_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return round((end - start).total_seconds(), 1)


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python examples/demo.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--server", help="use this running server instead of starting an embedded one")
    parser.add_argument("--out", help="keep the downloaded artifacts in this folder (default: a temp folder)")
    parser.add_argument("--summary", help="also write the figures as JSON to this file")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the job (default 600)"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=120.0, help="seconds to wait for the server to be ready"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
