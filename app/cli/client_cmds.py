"""Client subcommands: ``submit``, ``status``, ``download``, ``cancel`` talk to an nncompress server.

They use :mod:`nncompress.client` only; the table and progress helpers here are shared with the demo
(``examples/demo.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from nncompress.client import TERMINAL_STATUSES, Client, ServiceError, WaitTimeout
from nncompress.progress import ConsoleProgress
from nncompress.tables import render_table

DEFAULT_SERVER = "http://127.0.0.1:8000"
SERVER_ENV = "NNCOMPRESS_SERVER"
API_KEY_ENV = "NNCOMPRESS_API_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds this module's subcommands to the ``nncompress`` parser."""
    _add_submit(subparsers)
    _add_status(subparsers)
    _add_download(subparsers)
    _add_cancel(subparsers)


# -- client commands ------------------------------------------------------------------------------


def _client_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
        help=f"server URL (default ${SERVER_ENV} or {DEFAULT_SERVER})",
    )
    parent.add_argument(
        "--api-key", default=os.environ.get(API_KEY_ENV), help=f"API key (default ${API_KEY_ENV})"
    )
    parent.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request (default 30)")
    return parent


def _client(args: argparse.Namespace) -> Client:
    return Client(args.server, api_key=args.api_key, timeout=args.timeout)


def _add_submit(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "submit",
        parents=[_client_parent()],
        help="upload a model and submit a compression job",
        description="Uploads a weights file (or reuses an uploaded model) and submits a compression job.",
        epilog=(
            "examples:\n"
            "  nncompress submit --model net.safetensors --arch mnist_net --config config.json --wait\n"
            "  nncompress submit --model model.onnx --config config.json      # ONNX names its own layers\n"
            "  nncompress submit --model ./bert-finetuned/ --config ffn.json  # a save_pretrained folder\n"
            "  nncompress submit --model-id 3f2a... --arch mnist_net --pruner fpgm \\\n"
            '      --config \'[{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}]\' --input-shape 1,1,28,28\n'
            "exit status: 0 once submitted (with --wait: 0 only if the job succeeded)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--model",
        type=Path,
        help="model to upload: weights (with --arch), ONNX, a Hugging Face save_pretrained folder "
        "(zipped for you) or its zip, a zip of an ONNX model with its external data",
    )
    src.add_argument("--model-id", help="a model already uploaded (skips the upload)")
    p.add_argument(
        "--arch",
        help="architecture of a weights file: mnist_net, torchvision/resnet50, timm/resnet18 "
        "(only with safetensors or state_dict weights; other files describe their own model)",
    )
    p.add_argument(
        "--format",
        help="format the server must find (safetensors|state_dict|onnx|onnx_zip|hf_dir|pickle)",
    )
    p.add_argument("--config", required=True, help="config_list: a JSON file, or the JSON text itself")
    p.add_argument("--pruner", default="l1norm", help="pruner name (default l1norm)")
    p.add_argument(
        "--input-shape",
        type=_shape,
        help="example input shape with batch dim, e.g. 1,1,28,28 (default: arch's)",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the job runs")
    p.add_argument("--no-speedup", dest="speedup", action="store_false", help="keep masks, do not shrink")
    p.add_argument("--no-onnx", dest="export_onnx", action="store_false", help="skip the ONNX export")
    p.add_argument(
        "--no-verify", dest="verify", action="store_false", help="skip the speedup equivalence check"
    )
    p.add_argument("--idempotency-key", help="resubmitting with the same key returns the same job")
    p.add_argument("--wait", action="store_true", help="show progress until the job ends")
    p.add_argument("--wait-timeout", type=float, default=None, help="with --wait: give up after this many s")
    p.set_defaults(handler=_submit)


def _submit(args: argparse.Namespace) -> int:
    config_list = _read_config(args.config)
    with _client(args) as client:  # closes its connections when the command ends
        try:
            if args.model is not None:
                # The server tells weights (which need --arch) from self-describing files by their
                # bytes, and validates the config against the model that was uploaded, never another.
                with _upload_source(args.model) as source:
                    model = client.upload_model(source, architecture=args.arch, format=args.format)
                print(
                    f"uploaded {args.model.name}: model {model['id']} ({model['size_bytes']} bytes)",
                    file=sys.stderr,
                )
                model_id = model["id"]
            else:
                model_id = args.model_id
            job = client.create_job(
                model_id,
                config_list,
                pruner=args.pruner,
                speedup=args.speedup,
                device=args.device,
                input_shape=args.input_shape,
                export_onnx=args.export_onnx,
                verify=args.verify,
                idempotency_key=args.idempotency_key,
            )
            print(job["id"])
            if not args.wait:
                return 0
            return _wait_and_report(client, job["id"], args.wait_timeout)
        except ServiceError as exc:
            return _report_error(exc)


@contextlib.contextmanager
def _upload_source(path: Path) -> Iterator[Path]:
    """The file to upload: ``path`` itself, or a zip of it when it is a model folder."""
    if not path.is_dir():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="nncompress-upload-") as tmp:
        archive = Path(tmp) / f"{path.name or 'model'}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # weights barely compress
            for child in sorted(path.iterdir()):
                if child.is_file() and not child.name.startswith("."):
                    zf.write(child, child.name)
        yield archive


def _wait_and_report(client: Client, job_id: str, timeout: float | None) -> int:
    bar = ProgressBar(sys.stderr)
    try:
        job = client.wait(job_id, on_progress=bar.update, deadline=timeout)
    except WaitTimeout as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    print(format_job(job))
    return 0 if job["status"] == "succeeded" else 1


def _add_status(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "status",
        parents=[_client_parent()],
        help="show a job: status, stage, progress, error, metrics, artifacts",
        epilog=(
            "examples:\n  nncompress status 0c1d...\n  nncompress status 0c1d... --events\n"
            "  nncompress status 0c1d... --json | jq .metrics"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job", help="job id")
    p.add_argument("--json", action="store_true", help="print the job as the API returns it")
    p.add_argument("--events", action="store_true", help="also list the job's recorded transitions")
    p.add_argument("--wait", action="store_true", help="show progress until the job ends")
    p.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:  # closes its connections when the command ends
        try:
            if args.wait:
                return _wait_and_report(client, args.job, None)
            job = client.get_job(args.job)
            events = _all_events(client, args.job) if args.events else None
        except ServiceError as exc:
            return _report_error(exc)
    if args.json:
        print(json.dumps({**job, "events": events} if events is not None else job, indent=2))
        return 0
    print(format_job(job))
    if events is not None:
        print("\nevents:")
        print("\n".join(format_event(e) for e in events))
    return 0


def _all_events(client: Client, job_id: str) -> list[dict[str, Any]]:
    """Every recorded event, page after page (``next_cursor`` is the last id seen)."""
    events: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        page = client.events(job_id, after=after)
        if not page.get("items"):
            return events
        events += page["items"]
        after = page.get("next_cursor")
        if after is None:
            return events


def _add_download(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "download",
        parents=[_client_parent()],
        help="download a finished job's artifacts (sha256-checked)",
        epilog=(
            "examples:\n"
            "  nncompress download 0c1d...        # every artifact, into ./0c1d.../\n"
            "  nncompress download 0c1d... --name model.onnx --out models/"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job", help="job id")
    p.add_argument("--name", default="all", help="artifact name (e.g. model.safetensors) or 'all' (default)")
    p.add_argument("--out", type=Path, help="directory to write into (default ./<job id>)")
    p.set_defaults(handler=_download)


def _download(args: argparse.Namespace) -> int:
    with _client(args) as client:  # closes its connections when the command ends
        out: Path = args.out or Path(args.job)
        try:
            job = client.get_job(args.job)
            names = [a["name"] for a in job.get("artifacts", [])] if args.name == "all" else [args.name]
            if not names:
                print(f"job {args.job} is {job['status']} and has no artifacts yet", file=sys.stderr)
                return 1
            out.mkdir(parents=True, exist_ok=True)
            for name in names:
                print(client.download_artifact(args.job, name, out))
        except ServiceError as exc:
            return _report_error(exc)
        return 0


def _add_cancel(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "cancel",
        parents=[_client_parent()],
        help="cancel a queued or running job",
        epilog="example:\n  nncompress cancel 0c1d...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job", help="job id")
    p.set_defaults(handler=_cancel)


def _cancel(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            job = client.cancel(args.job)
    except ServiceError as exc:
        return _report_error(exc)
    print(f"{job.get('id', args.job)}: {job.get('status')}")
    return 0


# -- shared helpers (also used by examples/demo.py) ---------------------------------------------


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


def _shape(text: str) -> list[int]:
    """Parses ``1,1,28,28`` or ``1x1x28x28``."""
    try:
        dims = [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,1,28,28, got {text!r}") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,1,28,28, got {text!r}")
    return dims


def _read_config(value: str) -> list[Any]:
    """A config_list from a JSON file path or from JSON text; exits with a clear message otherwise."""
    path = Path(value)
    text = path.read_text() if path.is_file() else value
    try:
        config = json.loads(text)
    except ValueError as exc:
        where = str(path) if path.is_file() else "--config text"
        raise SystemExit(f"error: {where} is not valid JSON: {exc}") from None
    if not isinstance(config, list):
        raise SystemExit("error: --config must be a JSON list of config entries (a config_list)")
    return config


def _report_error(exc: ServiceError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    for item in exc.errors:
        print(f"  - {json.dumps(item)}", file=sys.stderr)
    return 1
