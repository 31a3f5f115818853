"""Who is calling: the ``Authorization: Bearer`` key's tenant, or the default tenant of an open server.

Every /v1 route depends on :func:`authenticate`; the principal it returns scopes every query, so
another tenant's ids are simply not found (404). It also spends one token of the tenant's rate
limit, so a 429 comes before any work is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.auth.keys import matches, split_key
from app.auth.ratelimit import RateLimiter, retry_after
from app.auth.tenants import DEFAULT_TENANT, get_or_create_tenant
from app.db.models import ApiKey, Tenant
from app.db.types import utcnow
from app.errors import RateLimited, Unauthorized
from app.settings import Settings, get_settings

# last_used_at is written at most this often per key: one UPDATE per request would serialize writers.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    """The calling tenant with its limits resolved against the deployment's defaults."""

    tenant_id: str
    tenant_name: str
    key_id: str | None
    max_concurrent_jobs: int
    max_upload_bytes: int
    requests_per_minute: int

    @classmethod
    def of(cls, tenant: Tenant, key_id: str | None, settings: Settings) -> Principal:
        upload = settings.max_upload_bytes
        if tenant.max_upload_bytes is not None:  # a tenant may get less than the deployment allows, not more
            upload = min(upload, tenant.max_upload_bytes)
        return cls(
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            key_id=key_id,
            max_concurrent_jobs=tenant.max_concurrent_jobs or settings.tenant_max_concurrent_jobs,
            max_upload_bytes=upload,
            requests_per_minute=tenant.requests_per_minute or settings.tenant_requests_per_minute,
        )


def _unauthorized(detail: str) -> Unauthorized:
    return Unauthorized(detail, headers={"WWW-Authenticate": "Bearer"})


def _tenant_of_key(session: Session, token: str, pepper: str | None) -> tuple[Tenant, ApiKey]:
    prefix = split_key(token)
    row = (
        None
        if prefix is None
        else session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
    )
    if row is None or not matches(token, row.secret_hash, pepper):
        raise _unauthorized("the API key is not valid")
    if row.revoked_at is not None:
        raise _unauthorized("the API key was revoked")
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
        session.commit()
    tenant = session.get(Tenant, row.tenant_id)
    assert tenant is not None  # the foreign key cascades a deleted tenant's keys
    return tenant, row


def resolve_principal(session: Session, settings: Settings, authorization: str | None) -> Principal:
    """The principal of a request's Authorization header (no rate limit)."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("send 'Authorization: Bearer <API key>'")
        tenant, key = _tenant_of_key(session, token.strip(), settings.api_key_pepper)
        return Principal.of(tenant, key.id, settings)
    if settings.keys_required:
        raise _unauthorized("this server requires an API key: send 'Authorization: Bearer <API key>'")
    tenant, _ = get_or_create_tenant(session, DEFAULT_TENANT)
    return Principal.of(tenant, None, settings)


def authenticate(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    """The calling tenant; 401 without a valid key where keys are required, 429 over the rate limit."""
    with request.app.state.session_factory() as session:
        principal = resolve_principal(session, settings, authorization)
    request.state.tenant = principal.tenant_name  # for the access log (app/observability)
    limiter: RateLimiter = request.app.state.rate_limiter
    wait = limiter.take(principal.tenant_id, principal.requests_per_minute)
    if wait > 0:
        raise RateLimited(
            f"tenant {principal.tenant_name!r} is over its limit of {principal.requests_per_minute} "
            "requests per minute",
            headers={"Retry-After": retry_after(wait)},
        )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
