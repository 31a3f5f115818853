"""Which callback URLs a job may name: http(s) to public addresses only, unless the deployment allows more.

Every address the host name resolves to is checked, so a name that points at 127.0.0.1 or at a
cloud metadata address (169.254.169.254) is refused like the literal address. The deliverer checks
again before each attempt, because DNS answers may change after the job was accepted.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from app.errors import InvalidWebhook


def _refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    # is_global is False for loopback, private, link-local, shared (100.64/10), reserved, unspecified.
    return not ip.is_global or ip.is_multicast


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (an IP literal resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]).split("%")[0] for info in infos})


def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """Raises InvalidWebhook unless ``url`` is http(s) with a host whose every address is public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidWebhook(f"webhook url {url!r} must be an absolute http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidWebhook(f"webhook url {url!r} has an invalid port") from None
    if allow_private:
        return
    try:
        addresses = resolve(parts.hostname, port)
    except (OSError, UnicodeError) as exc:
        raise InvalidWebhook(f"webhook host {parts.hostname!r} does not resolve: {exc}") from None
    refused = [a for a in addresses if _refused(ipaddress.ip_address(a))]
    if refused or not addresses:
        raise InvalidWebhook(
            f"webhook host {parts.hostname!r} resolves to a loopback, private, link-local or reserved "
            f"address ({', '.join(refused)}); this deployment only calls public addresses",
            errors=[{"field": "webhook.url", "addresses": refused}],
        )
