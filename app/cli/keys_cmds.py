"""Admin subcommands: ``nncompress keys create|list|revoke|webhook-secret`` (API keys and tenants).

They work on the service's database (``NNCOMPRESS_DATABASE_URL``) through :mod:`app.cli.keys`, imported
inside the handlers so that ``nncompress --help`` does not load the database layer.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``keys`` and its subcommands to the ``nncompress`` parser."""
    keys = subparsers.add_parser(
        "keys",
        help="create, list and revoke API keys (on the service's database)",
        description=(
            "API key administration on the database named by NNCOMPRESS_DATABASE_URL (default: the embedded "
            "server's ./var/nncompress.db). A new key is printed once; only its hash is stored."
        ),
        epilog=(
            "examples:\n  nncompress keys create --tenant ml-team\n  nncompress keys list --tenant ml-team\n"
            "  nncompress keys revoke 6a1f0c...   # a key id or its prefix"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="create a key for a tenant (the tenant is created if new)")
    create.add_argument("--tenant", required=True, help="tenant name, e.g. ml-team")
    create.add_argument("--name", help="a label for the key, e.g. ci-pipeline")
    create.set_defaults(handler=_create)
    listing = sub.add_parser("list", help="list keys: id, prefix, tenant, created, last used, revoked")
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.set_defaults(handler=_list)
    revoke = sub.add_parser("revoke", help="revoke a key; requests with it answer 401 from now on")
    revoke.add_argument("key_id", help="the key's id or prefix (see `nncompress keys list`)")
    revoke.set_defaults(handler=_revoke)
    secret = sub.add_parser(
        "webhook-secret", help="print the tenant's webhook signing secret (for jobs that name none)"
    )
    secret.add_argument("--tenant", required=True, help="tenant name")
    secret.set_defaults(handler=_webhook_secret)


def _create(args: argparse.Namespace) -> int:
    from app.cli.keys import keys_create

    return keys_create(args.tenant, name=args.name)


def _list(args: argparse.Namespace) -> int:
    from app.cli.keys import keys_list

    return keys_list(tenant=args.tenant)


def _revoke(args: argparse.Namespace) -> int:
    from app.cli.keys import keys_revoke

    return keys_revoke(args.key_id)


def _webhook_secret(args: argparse.Namespace) -> int:
    from app.cli.keys import webhook_secret

    return webhook_secret(args.tenant)
