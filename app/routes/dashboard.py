"""/ui: the dashboard, plain HTML, CSS and JavaScript modules from app/static (no build step).

The pages are public; every /v1 call they make carries the API key the user signed in with, so
serving them needs no key. Only files that exist under app/static when the app is built are served
(a fixed table, so no request path ever reaches the file system), with a Content-Security-Policy
that lets the page talk to this origin alone: the dashboard works offline and cannot load a script
or font from anywhere else.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse

from core.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # module scripts are refused under any other type
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (FileResponse sends ETag/Last-Modified): an upgraded server never
    # runs against a stale script from the browser's cache.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def static_files(root: Path = STATIC_DIR) -> dict[str, Path]:
    """The servable files under ``root`` by their URL path (``js/app.js``), by known extension only."""
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in MEDIA_TYPES
    }


@cache
def _files() -> dict[str, Path]:
    return static_files()


def _serve(name: str) -> FileResponse:
    path = _files().get(name)
    if path is None:
        raise NotFound(f"no dashboard file {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)


@router.get("/")
def root() -> RedirectResponse:
    """The dashboard is the front page for a person who opens the server's address."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui")
def ui_without_slash() -> RedirectResponse:
    # Module imports in index.html are relative; they resolve under /ui/ only.
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/")
def index() -> FileResponse:
    """The dashboard's single page (views are chosen by the URL fragment)."""
    return _serve("index.html")


@router.get("/ui/{name:path}")
def static_file(name: Annotated[str, PathParam(max_length=200)]) -> FileResponse:
    """A stylesheet or script of the dashboard."""
    return _serve(name)
