"""HTTP for the client: one httpx connection pool, redirects that never carry the API key off its
server, transport failures and problem+json answers turned into the client's errors."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx

from nncompress.client.errors import PROBLEM_PREFIX, ServiceError, ServiceUnreachable

MAX_REDIRECTS = 5
_ACCEPT = "application/json, application/problem+json;q=0.9, */*;q=0.5"


class Transport:
    """Sends requests to one server; a non-2xx answer raises :class:`ServiceError`, no answer
    :class:`ServiceUnreachable`."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            headers={"Accept": _ACCEPT},
            auth=OwnOriginBearer(api_key, base_url) if api_key else None,
        )

    def json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = self.send(method, url, **kwargs)
        return response.json() if response.content else {}

    def send(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request (``params`` set to None are left out), following a GET's redirects.

        Redirects are followed here rather than by httpx so that each hop goes through
        :class:`OwnOriginBearer` again: the key is added for this server and removed for any other.
        With ``stream``, the caller reads and closes the (successful) response.
        """
        query = {k: v for k, v in (params or {}).items() if v is not None}
        request = self.http.build_request(method, url, params=query or None, **kwargs)
        with unreachable_on_transport_errors(method, str(request.url)):
            response = self.http.send(request, stream=stream)
            for _ in range(MAX_REDIRECTS):
                if method != "GET" or response.next_request is None:
                    break
                response.close()
                response = self.http.send(response.next_request, stream=stream)
            if response.is_success:
                return response
            response.read()
            response.close()
        raise problem_from(response)

    def close(self) -> None:
        self.http.close()


class OwnOriginBearer(httpx.Auth):
    """``Authorization: Bearer <key>`` on requests to the API's own origin (scheme, host, port) only.

    httpx itself keeps the header on a redirect from http to https on the same host; an artifact's
    presigned URL must never see the key, whatever its scheme, so the rule is applied to every hop.
    """

    def __init__(self, key: str, base_url: str) -> None:
        self._key = key
        self._origin = _origin(httpx.URL(base_url))

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if _origin(request.url) == self._origin:
            request.headers["Authorization"] = f"Bearer {self._key}"
        else:
            request.headers.pop("Authorization", None)
        yield request


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or {"http": 80, "https": 443}.get(url.scheme)


class ObservedStream(httpx.SyncByteStream):
    """A response body that calls ``on_bytes`` as each chunk arrives (before it is decoded)."""

    def __init__(
        self, inner: httpx.SyncByteStream | httpx.AsyncByteStream, on_bytes: Callable[[], None]
    ) -> None:
        assert isinstance(inner, httpx.SyncByteStream)  # a sync client's response
        self._inner, self._on_bytes = inner, on_bytes

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._on_bytes()
            yield chunk

    def close(self) -> None:
        self._inner.close()


@contextlib.contextmanager
def unreachable_on_transport_errors(method: str, url: str) -> Iterator[None]:
    """No (complete) answer: refused, reset, timed out, cut mid-body: :class:`ServiceUnreachable`."""
    try:
        yield
    except httpx.TransportError as exc:
        raise ServiceUnreachable(
            type=PROBLEM_PREFIX + "unreachable",
            status=None,
            title="Server unreachable",
            detail=f"{method} {url}: {exc or type(exc).__name__}",
        ) from None


def problem_from(response: httpx.Response) -> ServiceError:
    """Turns an HTTP error answer into a ServiceError, from its problem+json body when it has one."""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "type" in doc:
        return ServiceError(
            type=str(doc["type"]),
            status=int(doc.get("status") or response.status_code),
            title=str(doc.get("title") or response.reason_phrase),
            detail=str(doc.get("detail") or ""),
            errors=doc.get("errors") if isinstance(doc.get("errors"), list) else None,
        )
    # Not a problem document (a proxy in the way, or a bug): keep the start of the body for the user.
    return ServiceError(
        type="about:blank",
        status=response.status_code,
        title=response.reason_phrase,
        detail=response.content[:500].decode("utf-8", "replace"),
    )


def path_segment(value: str) -> str:
    """Quotes one path segment, so an id can never change the path it is put into.

    ``.`` and ``..`` are encoded too: httpx, like a browser, would otherwise remove them as dot segments.
    """
    quoted = urllib.parse.quote(str(value), safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def upload_file_name(path: Path) -> str:
    """The file name sent with an upload (for display only): a quote or line break becomes ``_``,
    where httpx would send ``%22``, which the server keeps as it is."""
    return path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
