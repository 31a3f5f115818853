"""Subcommands (added as they land)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds this module's subcommands to the ``nncompress`` parser."""
