"""Tenants and keys in the database: create, look up, revoke (used by the API and `nncompress keys`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.keys import generate_key, hash_key, new_webhook_secret
from core.db.models import ApiKey, Tenant
from core.db.types import utcnow

DEFAULT_TENANT = "default"


def get_or_create_tenant(session: Session, name: str) -> tuple[Tenant, bool]:
    """The tenant called ``name``, created (and committed) if new; safe against a concurrent creator."""
    tenant = session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()
    if tenant is not None:
        return tenant, False
    tenant = Tenant(name=name, webhook_secret=new_webhook_secret())
    try:
        session.add(tenant)
        session.commit()
    except IntegrityError:
        session.rollback()
        return session.scalars(select(Tenant).where(Tenant.name == name)).one(), False
    return tenant, True


@dataclass(frozen=True)
class CreatedKey:
    key: str  # shown once, never stored
    row: ApiKey
    tenant: Tenant
    tenant_created: bool


def create_key(
    session: Session, *, tenant_name: str, pepper: str | None, name: str | None = None
) -> CreatedKey:
    """Creates an API key for the tenant (creating the tenant if new); only its hash is stored."""
    tenant, created = get_or_create_tenant(session, tenant_name)
    key, prefix = generate_key()
    row = ApiKey(tenant_id=tenant.id, prefix=prefix, secret_hash=hash_key(key, pepper), name=name)
    session.add(row)
    session.commit()
    return CreatedKey(key=key, row=row, tenant=tenant, tenant_created=created)


def revoke_key(session: Session, key_id: str) -> ApiKey | None:
    """Marks the key revoked (by id or prefix); None when no such key exists. Revoking twice is harmless."""
    row = (
        session.get(ApiKey, key_id)
        or session.scalars(select(ApiKey).where(ApiKey.prefix == key_id)).one_or_none()
    )
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return row


def list_keys(session: Session, tenant_name: str | None = None) -> list[tuple[ApiKey, Tenant]]:
    query = select(ApiKey, Tenant).join(Tenant, ApiKey.tenant_id == Tenant.id).order_by(ApiKey.created_at)
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    return [(k, t) for k, t in session.execute(query).all()]
