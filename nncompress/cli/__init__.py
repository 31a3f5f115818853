"""The ``nncompress`` command line.

Each group of subcommands lives in its own module and adds itself to the parser through a
``register(subparsers)`` function; this module only assembles them and dispatches.
Service subcommands import the service lazily, so the engine stays importable without it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from nncompress.errors import NncompressError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from nncompress.cli import admin_cmds, engine_cmds, service_cmds

    parser = argparse.ArgumentParser(
        prog="nncompress",
        description=(
            "Prune, speed up, fine-tune and quantize PyTorch models. "
            "Engine commands run locally; service commands talk to an nncompress server."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    engine_cmds.register(sub)
    service_cmds.register(sub)
    admin_cmds.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except NncompressError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
