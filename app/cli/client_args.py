"""What every client subcommand shares: where the server is, the key it takes, how errors print."""

from __future__ import annotations

import argparse
import json
import os
import sys

from nncompress.client import Client, ServiceError

DEFAULT_SERVER = "http://127.0.0.1:8000"
SERVER_ENV = "NNCOMPRESS_SERVER"
API_KEY_ENV = "NNCOMPRESS_API_KEY"


def client_parent() -> argparse.ArgumentParser:
    """The ``--server``, ``--api-key`` and ``--timeout`` options, as a parent parser.

    Returns:
        A parser without help to pass in a subcommand's ``parents``; the defaults read the
        environment when the parser is built.
    """
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


def open_client(args: argparse.Namespace) -> Client:
    """A client for the options :func:`client_parent` added; use it as a context manager."""
    return Client(args.server, api_key=args.api_key, timeout=args.timeout)


def report_error(exc: ServiceError) -> int:
    """Prints the server's refusal and its itemised errors to stderr.

    Returns:
        The exit status of a failed command (1).
    """
    print(f"error: {exc}", file=sys.stderr)
    for item in exc.errors:
        print(f"  - {json.dumps(item)}", file=sys.stderr)
    return 1
