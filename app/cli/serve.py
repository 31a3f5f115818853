"""``nncompress serve``: the API with an embedded worker (SQLite + local files, nothing else to install)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``serve`` to the ``nncompress`` parser."""
    _add_serve(subparsers)


def _add_serve(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "serve",
        help="run the API with an embedded worker (SQLite + local files, nothing else to install)",
        description=(
            "Runs the nncompress API and a local worker in one process: jobs are stored in SQLite and files "
            "under --data-dir. Other settings come from NNCOMPRESS_* variables. For the distributed mode "
            "(PostgreSQL, Redis, Celery workers) run `uvicorn app.main:create_app --factory` with "
            "DATABASE_URL and BROKER_URL instead."
        ),
        epilog=(
            "examples:\n  nncompress serve\n  nncompress serve --host 0.0.0.0 --port 9000 --data-dir /srv/nnc"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("./var"),
        help="where the SQLite database (nncompress.db) and stored files (storage/) live (default ./var)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=_serve)


_SERVE_OWN = frozenset({"database_url", "storage_dir", "broker_url", "api_host", "api_port"})


def _serve(args: argparse.Namespace) -> int:
    # Imported here, not at module level: the engine (and `nncompress prune`) must work without them.
    import uvicorn

    from app.main import create_app
    from core.settings import Settings

    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        database_url=f"sqlite:///{data_dir / 'nncompress.db'}",
        storage_dir=data_dir / "storage",
        broker_url=None,  # `serve` is the embedded mode by definition
        api_host=args.host,
        api_port=args.port,
        # The rest (require_api_keys, limits, webhooks, log format) from NNCOMPRESS_* variables.
        **{k: v for k, v in Settings().model_dump(exclude_unset=True).items() if k not in _SERVE_OWN},
    )
    print(
        f"nncompress: embedded server on http://{args.host}:{args.port} (data in {data_dir})", file=sys.stderr
    )
    if settings.keys_required:
        print(
            "nncompress: API keys REQUIRED (not a loopback address): create one with "
            f"`NNCOMPRESS_DATABASE_URL={settings.database_url} nncompress keys create --tenant NAME`",
            file=sys.stderr,
        )
    else:
        print(
            "nncompress: OPEN, no API key needed: bound to loopback only, every local user is tenant "
            "'default' (set NNCOMPRESS_REQUIRE_API_KEYS=true to require keys)",
            file=sys.stderr,
        )
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0
