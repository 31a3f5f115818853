"""``nncompress status|download|cancel``: look at, fetch the artifacts of, or stop one job."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.cli.client_args import client_parent, open_client, report_error
from app.cli.job_report import format_event, format_job
from app.cli.submit_cmds import wait_and_report
from nncompress.client import ServiceError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``status``, ``download`` and ``cancel`` to the ``nncompress`` parser."""
    _add_status(subparsers)
    _add_download(subparsers)
    _add_cancel(subparsers)


def _add_status(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "status",
        parents=[client_parent()],
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
    with open_client(args) as client:  # closes its connections when the command ends
        try:
            if args.wait:
                return wait_and_report(client, args.job, None)
            job = client.get_job(args.job)
            events = list(client.iter_events(args.job)) if args.events else None
        except ServiceError as exc:
            return report_error(exc)
    if args.json:
        print(json.dumps({**job, "events": events} if events is not None else job, indent=2))
        return 0
    print(format_job(job))
    if events is not None:
        print("\nevents:")
        print("\n".join(format_event(e) for e in events))
    return 0


def _add_download(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "download",
        parents=[client_parent()],
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
    with open_client(args) as client:  # closes its connections when the command ends
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
            return report_error(exc)
        return 0


def _add_cancel(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "cancel",
        parents=[client_parent()],
        help="cancel a queued or running job",
        epilog="example:\n  nncompress cancel 0c1d...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job", help="job id")
    p.set_defaults(handler=_cancel)


def _cancel(args: argparse.Namespace) -> int:
    try:
        with open_client(args) as client:
            job = client.cancel(args.job)
    except ServiceError as exc:
        return report_error(exc)
    print(f"{job.get('id', args.job)}: {job.get('status')}")
    return 0
