"""RFC 9457 problem details: every error the API returns is ``application/problem+json``."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from core.errors import ServiceError
from nncompress.datasets.errors import DatasetLimitError
from nncompress.errors import ConfigError, NncompressError

PROBLEM_MEDIA_TYPE = "application/problem+json"
_HTTP_PROBLEMS = {
    400: ("malformed_request", "Malformed request"),  # a JSON body that is not UTF-8, say
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    408: ("body_timeout", "Request body too slow"),
    413: ("request_too_large", "Request body too large"),
}
TYPE_PREFIX = "urn:nncompress:problem:"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request its client abandoned
log = logging.getLogger(__name__)


def http_problem(status: int) -> tuple[int, str]:
    """The status and stable code an HTTP-layer error of ``status`` is answered with."""
    return status, _HTTP_PROBLEMS.get(status, (f"http_{status}", ""))[0]


def problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem document with a stable ``type`` derived from ``code``."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if errors:
        body["errors"] = _json_safe(errors, 0)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _json_safe(value: Any, depth: int) -> Any:
    """``value`` with what strict JSON cannot carry made printable: NaN/Infinity and huge integers
    as strings, nesting beyond a few levels as its (truncated) repr; the renderer must not fail on
    the very input it is reporting."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        text = str(value)
        return text if len(text) <= 40 else f"<an integer of {len(text)} digits>"
    if isinstance(value, (dict, list, tuple)) and depth >= 8:
        return repr(value)[:200]
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    return value


def engine_error_fields(exc: NncompressError) -> list[dict[str, Any]]:
    """The ``errors`` entry of an engine error: its message plus its context (entry, key, layer, ...)."""
    context = {k: v for k, v in exc.context.items() if _jsonable_scalar_or_list(v)}
    return [{"code": exc.code, "message": exc.message, **context}]


def _jsonable_scalar_or_list(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return problem_response(
        request,
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        errors=exc.errors,
        headers=exc.headers,
    )


async def _engine_error(request: Request, exc: Exception) -> JSONResponse:
    # Engine errors reaching the API are caused by the request (a config, a model file): 422; a data
    # set that would decode past a cap is 413, its type naming the cap (dataset_<cap>_exceeded).
    assert isinstance(exc, NncompressError)
    status, title = 422, "Invalid config_list" if isinstance(exc, ConfigError) else "Invalid model or request"
    if isinstance(exc, DatasetLimitError):
        status, title = 413, "Data set over a limit"
    fields = engine_error_fields(exc)
    return problem_response(
        request, status=status, code=exc.code, title=title, detail=exc.message, errors=fields
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "message": e.get("msg", ""), "code": e.get("type", "invalid")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['message']}" for e in errors)
    return problem_response(
        request, status=422, code="validation_error", title="Invalid request", detail=detail, errors=errors
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _HTTP_PROBLEMS.get(exc.status_code, (f"http_{exc.status_code}", "HTTP error"))
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem_response(
        request, status=exc.status_code, code=code, title=title, detail=str(exc.detail), headers=headers
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path.

    Starlette's 405 names the methods of the first route whose path matched, so ``/v1/jobs`` (a
    GET route and a POST route) advertised only one of them.
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _client_disconnect(request: Request, exc: Exception) -> JSONResponse:
    # The client went away mid-body (an upload cancelled, a connection dropped): nothing on our side
    # failed, so it is a warning, and the status recorded by the access log and /metrics is nginx's
    # 499 "client closed request". The response itself reaches nobody.
    log.warning("client disconnected during %s %s; request abandoned", request.method, request.url.path)
    return problem_response(
        request,
        status=CLIENT_CLOSED_REQUEST,
        code="client_closed_request",
        title="Client closed request",
        detail="the client disconnected before the request body was received",
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        request,
        status=500,
        code="internal_error",
        title="Internal server error",
        detail="the server failed to handle the request; it has been logged",
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Routes every error (domain, engine, validation, HTTP, unexpected) to a problem document."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(NncompressError, _engine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _unexpected_error)
