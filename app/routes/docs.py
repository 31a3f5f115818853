"""/docs (Swagger UI) and /redoc, served with their scripts from this server: they work offline.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and ReDoc its fonts from Google), so
they are blank where the server has no internet, as many deployments of this service have not.
The scripts come from the ``fastapi-offline`` package, which ships them; only its three asset
files are served, from a fixed table, so no request path reaches the file system.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from core.errors import NotFound

ASSETS_PATH = "/docs/assets"
FAVICON = "/ui/favicon.svg"  # the dashboard's icon (app/static)
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
}

router = APIRouter(include_in_schema=False)


@cache
def assets_dir() -> Path:
    """Where the installed ``fastapi-offline`` keeps the Swagger UI and ReDoc bundles."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).resolve().parent / "static"


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{FAVICON}",
        # Swagger UI would otherwise send the spec's URL to its public validator for a badge.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{FAVICON}",
        with_google_fonts=False,
    )


@router.get(ASSETS_PATH + "/{name}")
def asset(name: str) -> FileResponse:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no documentation asset {name[:80]!r}")
    return FileResponse(
        assets_dir() / name,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )
