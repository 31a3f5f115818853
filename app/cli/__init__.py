"""The service's commands, reachable as ``nncompress serve|submit|status|download|cancel|keys``.

The engine's CLI (:mod:`nncompress.cli`) finds them through the ``nncompress.commands`` entry point, so the
engine never imports the service; each module imports its heavy dependencies inside its handlers.
"""

from __future__ import annotations

import argparse

from app.cli import job_cmds, keys_cmds, serve, submit_cmds


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds the service's subcommands to the ``nncompress`` parser."""
    serve.register(subparsers)
    submit_cmds.register(subparsers)
    job_cmds.register(subparsers)
    keys_cmds.register(subparsers)
