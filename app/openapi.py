"""The OpenAPI document as the API really answers: problem responses per operation, API-key security.

Routes declare the problems their own logic raises (``responses=problems(NotFound, ...)``); what
every operation of a kind can answer is added here by rule, from the generated document itself:

- every ``/v1`` operation: 401 ``unauthorized`` and 429 ``rate_limited`` (``app.auth``), and the
  bearer-key security requirement in place of a bare ``Authorization`` header parameter;
- every operation with parameters or a body: 422 ``validation_error`` (FastAPI's default 422, an
  ``application/json`` ``HTTPValidationError`` that is never sent, is replaced);
- every body: 408 ``body_timeout`` (``app.body_guard``); every JSON body also 400
  ``malformed_request`` (bytes that are not UTF-8 JSON) and 413 ``request_too_large``
  (``app.body_limit``).

Each problem response is ``application/problem+json`` with the :class:`ProblemDetails` schema and
the ``type``\\ s that status can carry on that operation as an enum, so a client (and schemathesis)
can check an answer against the list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.problems import PROBLEM_MEDIA_TYPE, TYPE_PREFIX, http_problem
from app.schemas.problems import SCHEMA_NAME, ProblemDetails
from core.errors import RateLimited, ServiceError, Unauthorized
from nncompress.datasets.errors import DatasetLimitError
from nncompress.errors import NncompressError

_REF = f"#/components/schemas/{SCHEMA_NAME}"
SECURITY_SCHEME = "apiKey"
ENGINE_ERROR_STATUS = 422  # how app.problems answers an engine error the request caused


# A problem kind: a ServiceError or engine error class, or (status, code) for the few raised by
# the HTTP layer itself. A code ending in '*' stands for a family (dataset_<cap>_exceeded).
ProblemKind = type[ServiceError] | type[NncompressError] | tuple[int, str]


# Upload routes, besides their own problems: the per-tenant cap on uploads in flight (app.upload_slots).
UPLOAD_PROBLEMS: list[ProblemKind] = [(429, "too_many_uploads")]


def engine_errors(base: type[NncompressError]) -> list[type[NncompressError]]:
    """``base`` and every subclass of it that is imported, so a new engine error is documented
    by the operations that already list its family."""
    found, stack = [], [base]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def upload_body(properties: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``openapi_extra`` for a streamed multipart upload (the route reads the body itself, so FastAPI
    cannot derive it): a required ``file`` part plus ``properties``' other parts and fields."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["file"], "properties": properties}
                }
            },
        }
    }


def file_part(description: str | None = None) -> dict[str, Any]:
    """The schema of one file part of a multipart upload."""
    part: dict[str, Any] = {"type": "string", "format": "binary"}
    if description:
        part["description"] = description
    return part


def _status_code(kind: ProblemKind) -> tuple[int, str]:
    if isinstance(kind, tuple):
        return kind
    if issubclass(kind, ServiceError):
        return kind.status, kind.code
    # As app.problems answers engine errors: a data set over a decoding cap is 413, the rest 422.
    return (413 if issubclass(kind, DatasetLimitError) else ENGINE_ERROR_STATUS), kind.code


def _type_schema(codes: Iterable[str]) -> dict[str, Any]:
    exact = sorted({TYPE_PREFIX + c for c in codes if not c.endswith("*")})
    families = sorted({c for c in codes if c.endswith("*")})
    options: list[dict[str, Any]] = [{"enum": exact}] if exact else []
    options += [
        {"type": "string", "pattern": "^" + re.escape(TYPE_PREFIX + c[:-1]) + "[a-z0-9_]+$"} for c in families
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _response(codes: list[str]) -> dict[str, Any]:
    shown = ", ".join(sorted(c for c in set(codes)))
    schema = {
        "allOf": [{"$ref": _REF}, {"type": "object", "properties": {"type": _type_schema(codes)}}],
    }
    return {
        "description": f"Problem: {shown}",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}},
        "x-problem-types": sorted(set(codes)),
    }


def problems(*kinds: ProblemKind | Iterable[ProblemKind]) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: its problem answers grouped by status.

    Args:
        kinds: error classes (ServiceError, engine errors), ``(status, code)`` pairs, or lists of
            them (``engine_errors(ConfigError)``).
    """
    by_status: dict[int, list[str]] = {}
    for kind in kinds:
        for one in kind if isinstance(kind, list) else [kind]:
            status, code = _status_code(one)  # type: ignore[arg-type]
            by_status.setdefault(status, []).append(code)
    return {status: _response(codes) for status, codes in sorted(by_status.items())}


def _add(operation: dict[str, Any], status: int, codes: list[str]) -> None:
    responses = operation.setdefault("responses", {})
    current = responses.get(str(status))
    known = (current or {}).get("x-problem-types") if current else None
    responses[str(status)] = _response([*(known or []), *codes])


def _not_null(parameter: dict[str, Any]) -> dict[str, Any]:
    """A parameter typed ``X | None`` is documented as X: a query, header or path parameter is
    left out, never null (a client sending the text 'null' would be refused)."""
    schema = parameter.get("schema", {})
    options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
    if len(options) == len(schema.get("anyOf", [])):
        return parameter
    rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    merged = options[0] if len(options) == 1 else {"anyOf": options}
    return {**parameter, "schema": {**merged, **rest}}


def _complete(path: str, operation: dict[str, Any]) -> None:
    parameters = [_not_null(p) for p in operation.get("parameters", [])]
    if parameters:
        operation["parameters"] = parameters
    if path.startswith("/v1/") or path == "/v1":
        operation["parameters"] = parameters = [
            p for p in parameters if not (p.get("in") == "header" and p.get("name") == "authorization")
        ]
        operation["security"] = [{SECURITY_SCHEME: []}]
        _add(operation, Unauthorized.status, [Unauthorized.code])
        _add(operation, RateLimited.status, [RateLimited.code])
    body = operation.get("requestBody", {}).get("content", {})
    if "x-problem-types" not in operation["responses"].get("422", {}):
        operation["responses"].pop("422", None)  # FastAPI's HTTPValidationError: never sent
    if parameters or body:
        _add(operation, 422, ["validation_error"])
    if body:
        _add(operation, 408, [http_problem(408)[1]])  # app.body_guard: a body slower than the minimum rate
    if "application/json" in body:
        _add(operation, 400, [http_problem(400)[1]])
        _add(operation, 413, [http_problem(413)[1]])


def _without_x_keys(value: Any) -> Any:
    # x-problem-types only carries the codes between the steps above; the schema's enum says it.
    if isinstance(value, dict):
        return {k: _without_x_keys(v) for k, v in value.items() if k != "x-problem-types"}
    if isinstance(value, list):
        return [_without_x_keys(v) for v in value]
    return value


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, completed as the module docstring says."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            _complete(path, operation)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas[SCHEMA_NAME] = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key, 'nnc_<prefix>_<secret>' (`nncompress keys create`); "
            "an embedded server on loopback may run without keys",
        }
    }
    text = repr(schema["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}'" not in text:
            schemas.pop(unused, None)
    return _without_x_keys(schema)  # type: ignore[no-any-return]


def install_openapi(app: FastAPI) -> None:
    """Serves :func:`build_openapi` at ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
