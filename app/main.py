"""The FastAPI application factory: ``uvicorn --factory app.main:create_app``.

Nothing is built at import time. In embedded mode (no broker) the lifespan migrates the SQLite
database to head and starts the local dispatcher; in distributed mode migrations are a separate
deployment step (``alembic upgrade head``) and the dispatcher publishes to Celery.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from app.auth.principal import make_principal_cache
from app.auth.ratelimit import make_rate_limiter
from app.body_guard import BodyCuts, BodyGuardMiddleware, BodyPace
from app.body_limit import MAX_JSON_BODY_BYTES, BodyLimitMiddleware
from app.deps import authenticate
from app.metrics import Metrics, MetricsMiddleware
from app.openapi import install_openapi
from app.problems import install_problem_handlers
from app.request_log import RequestContextMiddleware
from app.routes import architectures, artifacts, dashboard, datasets, docs, health, jobs, models
from app.routes.job_submit import FAST_SUBMIT
from app.upload_slots import UploadSlots
from core.db.migrate import upgrade_to_head
from core.db.session import make_engine, make_read_engine, make_session_factory
from core.dispatch import Dispatcher, make_dispatcher
from core.logs import configure_logging
from core.settings import Settings, get_settings
from core.storage import open_storage

log = logging.getLogger("app")
# Connections the API keeps open per process (see api_pool): polls and lists read on their own pool.
READ_POOL_SIZE = 16
WRITE_POOL_SIZE = 5
# Sync routes run on at most 40 threads (anyio's default), each using one connection at a time.
MAX_CONNECTIONS = 40


def api_pool(database_url: str, kept: int) -> dict[str, int]:
    """A pool of the API that keeps ``kept`` connections open and may open up to 40 in all.

    SQLAlchemy keeps 5 and closes the overflow on return: when polls shared that pool, 13% of them
    opened a new PostgreSQL connection under 8 concurrent polls (yappi, benchmarks/api_load.py), so
    the read pool keeps 16. Writes are rarer and keep SQLAlchemy's 5, which bounds the idle
    connections of a process at 21 (PostgreSQL allows 100 by default across every process).
    """
    if make_url(database_url).database in (None, "", ":memory:"):
        return {}  # an in-memory SQLite database lives on one connection: its pool is not sized
    return {"pool_size": kept, "max_overflow": MAX_CONNECTIONS - kept}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging(settings.log_format, settings.log_level)
    if not settings.keys_required:
        log.warning(
            "API keys are NOT required: embedded server on loopback %s; every local user acts as tenant "
            "'default'. Bind another address, or set NNCOMPRESS_REQUIRE_API_KEYS=true, to require keys.",
            settings.api_host,
        )
    if settings.embedded:
        await run_in_threadpool(upgrade_to_head, settings.database_url)
    app.state.storage.ensure_dirs()
    await run_in_threadpool(app.state.storage.sweep_partial_uploads)
    if app.state.dispatcher is None:
        app.state.dispatcher = make_dispatcher(settings, app.state.session_factory)
    dispatcher: Dispatcher = app.state.dispatcher
    dispatcher.start()
    try:
        yield
    finally:
        dispatcher.stop()
        if app.state.read_engine is not app.state.engine:
            app.state.read_engine.dispose()
        app.state.engine.dispose()


def create_app(settings: Settings | None = None, *, dispatcher: Dispatcher | None = None) -> FastAPI:
    """Builds the API for ``settings`` (default: from the environment).

    Args:
        settings: the deployment's settings; also served to routes through ``app.deps.SettingsDep``.
        dispatcher: hands job ids to workers; None builds the registered one at start-up
            (:func:`core.dispatch.make_dispatcher`).
    """
    settings = settings or get_settings()
    app = FastAPI(
        title="nncompress",
        version="0.1.0",
        summary="Model compression as a service: upload a model and a config_list, download a smaller model.",
        lifespan=lifespan,
        docs_url=None,  # app.routes.docs serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    engine = make_engine(settings.database_url, **api_pool(settings.database_url, WRITE_POOL_SIZE))
    session_factory = make_session_factory(engine)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    # GET /v1/jobs[/{id}] read on their own pool, without pre-ping (make_read_engine); writes keep it.
    app.state.read_engine = make_read_engine(engine, **api_pool(settings.database_url, READ_POOL_SIZE))
    app.state.storage = open_storage(settings)
    app.state.dispatcher = dispatcher
    app.state.rate_limiter = make_rate_limiter(settings.broker_url)
    app.state.principal_cache = make_principal_cache(settings)
    app.state.metrics = Metrics(session_factory, settings, lambda: app.state.dispatcher)
    app.state.upload_slots = UploadSlots(app.state.metrics.registry)
    install_problem_handlers(app)
    app.router.routes.append(FAST_SUBMIT)  # before the jobs router, whose submit route it goes ahead of
    for module in (models, jobs, artifacts, architectures, datasets):
        app.include_router(module.router, dependencies=[Depends(authenticate)])
    app.include_router(health.router)  # probes and scrapes stay open
    app.include_router(dashboard.router)  # static pages; their /v1 calls carry the key
    app.include_router(docs.router)
    install_openapi(app)

    def body_limit(scope: Scope) -> int | None:
        # The upload route limits its own stream (receive_form: file size, field count and size).
        is_upload = scope["method"] == "POST" and scope["path"].rstrip("/") in ("/v1/models", "/v1/datasets")
        return None if is_upload else MAX_JSON_BODY_BYTES

    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    # Outside the limit: its early 413 must carry Connection: close too.
    body_cuts = BodyCuts(app.state.metrics.registry)
    app.add_middleware(BodyGuardMiddleware, pace=BodyPace.from_settings(settings), cuts=body_cuts)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(RequestContextMiddleware)  # outermost: the id covers every other layer's logs
    return app
