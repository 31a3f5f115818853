"""The ``nncompress`` command line.

Each group of subcommands adds itself to the parser through a ``register(subparsers)`` function; this module
only assembles them and dispatches. The engine's own commands live here; the service's (``serve``, ``submit``,
``keys``...) live with the service and are found through the ``nncompress.commands`` entry point group, so the
engine never imports the service and still offers its commands when it is installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from nncompress.errors import NncompressError

Handler = Callable[[argparse.Namespace], int]
# Other packages add subcommands with an entry point in this group naming a ``register(subparsers)``.
COMMANDS_GROUP = "nncompress.commands"


def build_parser() -> argparse.ArgumentParser:
    from nncompress.cli import engine_cmds

    parser = argparse.ArgumentParser(
        prog="nncompress",
        description=(
            "Prune, speed up, fine-tune and quantize PyTorch models. "
            "Engine commands run locally; service commands talk to an nncompress server."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    engine_cmds.register(sub)
    for entry_point in entry_points(group=COMMANDS_GROUP):
        try:
            register = entry_point.load()
        except ImportError:
            continue  # installed without the service's dependencies: its commands are simply absent
        register(sub)
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
