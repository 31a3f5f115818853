"""The webhook SSRF guard sees through IPv6 forms that embed an IPv4 address; a malformed URL is a 422."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest

from core.errors import InvalidWebhook
from core.webhooks.urls import check_webhook_url, embedded_ipv4
from tests.app.factories import job_body, uploaded_mnist

EMBEDDING_PRIVATE_IPV4 = [
    "http://[::127.0.0.1]/h",  # IPv4-compatible
    "http://[::ffff:127.0.0.1]/h",  # IPv4-mapped
    "http://[64:ff9b::7f00:1]/h",  # NAT64 well-known prefix -> 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",  # NAT64 -> 169.254.169.254
    "http://[64:ff9b::a00:1]/h",  # NAT64 -> 10.0.0.1
    "http://[64:ff9b:1::7f00:1]/h",  # NAT64 local-use prefix (RFC 8215)
    "http://[2002:7f00:1::]/h",  # 6to4 -> 127.0.0.1
    "http://[2002:a9fe:a9fe::1]/h",  # 6to4 -> 169.254.169.254
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/h",  # Teredo, client 127.0.0.1
]


@pytest.mark.parametrize("url", EMBEDDING_PRIVATE_IPV4)
def test_ipv6_embedding_a_private_ipv4_is_refused(url: str) -> None:
    with pytest.raises(InvalidWebhook):
        check_webhook_url(url, allow_private=False)


def test_public_addresses_still_pass() -> None:
    check_webhook_url("http://[64:ff9b::808:808]/h", allow_private=False)  # NAT64 -> 8.8.8.8
    check_webhook_url("https://[2606:4700:4700::1111]/h", allow_private=False)
    check_webhook_url("http://8.8.8.8/h", allow_private=False)


def test_embedded_ipv4_reads_every_form() -> None:
    def v4s(text: str) -> list[str]:
        return [str(a) for a in embedded_ipv4(ipaddress.IPv6Address(text))]

    assert v4s("::ffff:10.0.0.1") == ["10.0.0.1"]
    assert v4s("::7f00:1") == ["127.0.0.1"]
    assert v4s("64:ff9b::a9fe:a9fe") == ["169.254.169.254"]
    assert v4s("2002:7f00:1::") == ["127.0.0.1"]
    assert "127.0.0.1" in v4s("2001:0:4136:e378:8000:63bf:80ff:fffe")
    assert v4s("2606:4700:4700::1111") == []
    assert v4s("::1") == []


@pytest.mark.parametrize(
    "url", ["http://[::1/h", "http://[64:ff9b::7f00:1]/h", "http://[::127.0.0.1]/h", "http://[x]/h"]
)
def test_refused_or_malformed_webhook_is_422_at_post(
    make_client: Callable[..., Any], make_settings: Any, url: str
) -> None:
    client = make_client(make_settings())
    body = job_body(uploaded_mnist(client), webhook={"url": url, "events": ["succeeded"]})
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "urn:nncompress:problem:invalid_webhook"
    assert client.get("/v1/jobs").json()["items"] == []


# -- the deliverer connects to the address it checked (DNS rebinding) --------------------------------


class _Receiver:
    """A local HTTP endpoint that counts the webhook requests reaching it."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.hits = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.hits += 1
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_name_rebound_to_loopback_after_the_check_is_not_called(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from core.settings import Settings
    from core.webhooks.deliverer import WebhookDeliverer

    receiver = _Receiver()
    real_getaddrinfo = socket.getaddrinfo
    answers = iter(["1.1.1.1"])  # the first lookup (the check) sees a public address, later ones loopback

    def rebinding_dns(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "hooks.rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        address = next(answers, "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    deliverer = WebhookDeliverer(
        lambda: None,  # type: ignore[arg-type,return-value]  # _send never opens a session
        Settings(webhook_allow_private=False, webhook_timeout_seconds=1.0),
    )
    try:
        secret = "whsec_" + "A" * 44
        outcome = deliverer._send(f"http://hooks.rebind.test:{receiver.port}/h", secret, "msg_1", b"{}")
    finally:
        receiver.close()

    # Before the fix the request followed the second answer to 127.0.0.1 and was delivered there.
    assert receiver.hits == 0
    assert not outcome.delivered


def test_pinned_request_keeps_the_host_for_the_server_and_tls() -> None:
    from core.webhooks.urls import pinned_request

    url, headers, extensions = pinned_request("https://user:pw@hooks.example.com:8443/a?b=1", "2606:4700::1")

    assert url == "https://[2606:4700::1]:8443/a?b=1"
    assert headers == {"host": "hooks.example.com:8443"}
    assert extensions == {"sni_hostname": "hooks.example.com"}
