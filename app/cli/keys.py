"""`nncompress keys create|list|revoke|webhook-secret`: API key administration, straight on the database.

Run where the service's settings are (``NNCOMPRESS_DATABASE_URL``); the API need not be running.
The key is printed once and only its hash is stored, so a lost key is revoked and replaced.
"""

from __future__ import annotations

import sys
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.auth.tenants import create_key, list_keys, revoke_key
from core.db.migrate import upgrade_to_head
from core.db.models import Tenant
from core.db.session import make_engine, make_session_factory
from core.settings import Settings, get_settings
from nncompress.tables import render_table


def _sessions(settings: Settings) -> sessionmaker[Session]:
    if settings.embedded:
        upgrade_to_head(settings.database_url)  # the embedded server migrates at start; so do we
    return make_session_factory(make_engine(settings.database_url))


def keys_create(
    tenant: str, *, name: str | None = None, settings: Settings | None = None, out: TextIO = sys.stdout
) -> int:
    settings = settings or get_settings()
    with _sessions(settings)() as session:
        created = create_key(session, tenant_name=tenant, pepper=settings.api_key_pepper, name=name)
        if created.tenant_created:
            print(f"created tenant {tenant!r} ({created.tenant.id})", file=sys.stderr)
            print(
                "tenant webhook secret (signs the webhooks of jobs that name none): "
                + created.tenant.webhook_secret,
                file=sys.stderr,
            )
        print(f"key id {created.row.id} (prefix {created.row.prefix}) for tenant {tenant!r}", file=sys.stderr)
        print("store this key now; it is not shown again:", file=sys.stderr)
        print(created.key, file=out)
    return 0


def keys_list(
    *, tenant: str | None = None, settings: Settings | None = None, out: TextIO = sys.stdout
) -> int:
    settings = settings or get_settings()
    with _sessions(settings)() as session:
        rows = list_keys(session, tenant)
    table: list[tuple[str, ...]] = [("KEY ID", "PREFIX", "TENANT", "CREATED", "LAST USED", "STATE")]
    for key, t in rows:
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        last = f"{key.last_used_at:%Y-%m-%d %H:%M:%S}" if key.last_used_at else "-"
        table.append((key.id, key.prefix, t.name, f"{key.created_at:%Y-%m-%d %H:%M:%S}", last, state))
    print(render_table(table), file=out)
    return 0


def keys_revoke(key_id: str, *, settings: Settings | None = None, out: TextIO = sys.stdout) -> int:
    settings = settings or get_settings()
    with _sessions(settings)() as session:
        row = revoke_key(session, key_id)
    if row is None:
        print(f"error: no API key with id or prefix {key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {row.id} (prefix {row.prefix}) at {row.revoked_at:%Y-%m-%d %H:%M:%S}", file=out)
    return 0


def webhook_secret(tenant: str, *, settings: Settings | None = None, out: TextIO = sys.stdout) -> int:
    """Prints the secret that signs the webhooks of the tenant's jobs that bring no secret of their own."""
    settings = settings or get_settings()
    with _sessions(settings)() as session:
        secret = session.scalar(select(Tenant.webhook_secret).where(Tenant.name == tenant))
    if secret is None:
        print(f"error: no tenant {tenant!r}", file=sys.stderr)
        return 1
    print(secret, file=out)
    return 0
