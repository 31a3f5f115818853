"""Who is calling: the ``Authorization: Bearer`` key's tenant, or the default tenant of an open server.

Every /v1 route depends on :func:`authenticate`; the principal it returns scopes every query, so
another tenant's ids are simply not found (404). It also spends one token of the tenant's rate
limit, so a 429 comes before any work is done.

A resolved principal is cached per process for ``settings.principal_cache_seconds`` (see
``app.auth.cache``): a client polling a job costs no key lookup, and a revoked key stops working
within that many seconds. A cache miss is one query (key joined to its tenant), run in the
threadpool; a hit does no blocking work, so ``authenticate`` is async and adds no threadpool hop.
The rate limit is answered in process too, except when the tenant's tokens must be fetched from
Redis (``app.auth.ratelimit``: in batches), which runs in the threadpool so it never blocks the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth.cache import TtlCache
from app.auth.keys import hash_key, matches, split_key
from app.auth.ratelimit import RateLimiter, retry_after
from app.auth.tenants import DEFAULT_TENANT, get_or_create_tenant
from core.db.models import ApiKey, Tenant
from core.db.types import utcnow
from core.errors import RateLimited, Unauthorized
from core.settings import Settings

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
    # One round trip: the key and its tenant (the foreign key cascades a deleted tenant's keys).
    found = (
        None
        if prefix is None
        else session.execute(
            select(ApiKey, Tenant).join(Tenant, ApiKey.tenant_id == Tenant.id).where(ApiKey.prefix == prefix)
        ).one_or_none()
    )
    if found is None or not matches(token, found[0].secret_hash, pepper):
        raise _unauthorized("the API key is not valid")
    row, tenant = found
    if row.revoked_at is not None:
        raise _unauthorized("the API key was revoked")
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
        session.commit()
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


def _cache_key(authorization: str | None, pepper: str | None) -> str:
    # The header's HMAC, not the header: the cache must not hold keys in clear.
    return "bearer:" + hash_key(authorization, pepper) if authorization else "open"


def _resolve_in_session(request: Request, settings: Settings, authorization: str | None) -> Principal:
    with request.app.state.session_factory() as session:
        return resolve_principal(session, settings, authorization)


async def authenticate(request: Request) -> Principal:
    """The calling tenant; 401 without a valid key where keys are required, 429 over the rate limit."""
    # Read here rather than declared as a Header parameter: FastAPI would validate it on every request,
    # twice (the routers' dependency and the route's), and OpenAPI documents the bearer scheme instead.
    authorization = request.headers.get("authorization")
    settings: Settings = request.app.state.settings
    cache: TtlCache[Principal] = request.app.state.principal_cache
    key = _cache_key(authorization, settings.api_key_pepper)
    principal = cache.get(key)
    if principal is None:
        principal = await run_in_threadpool(_resolve_in_session, request, settings, authorization)
        cache.put(key, principal)
    request.state.tenant = principal.tenant_name  # for the access log (app/observability)
    limiter: RateLimiter = request.app.state.rate_limiter
    wait = limiter.take_local(principal.tenant_id, principal.requests_per_minute)
    if wait is None:  # the shared bucket (Redis) must answer: off the event loop
        wait = await run_in_threadpool(limiter.take, principal.tenant_id, principal.requests_per_minute)
    if wait > 0:
        raise RateLimited(
            f"tenant {principal.tenant_name!r} is over its limit of {principal.requests_per_minute} "
            "requests per minute",
            headers={"Retry-After": retry_after(wait)},
        )
    return principal


def make_principal_cache(settings: Settings) -> TtlCache[Principal]:
    return TtlCache(ttl=settings.principal_cache_seconds)


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
