"""The webhook SSRF guard sees through IPv6 forms that embed an IPv4 address; a malformed URL is a 422."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest

from app.errors import InvalidWebhook
from app.webhooks.urls import check_webhook_url, embedded_ipv4
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
