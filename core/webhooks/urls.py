"""Which callback URLs a job may name: http(s) to public addresses only, unless the deployment allows more.

Every address the host name resolves to is checked, so a name that points at 127.0.0.1 or at a
cloud metadata address (169.254.169.254) is refused like the literal address. The deliverer checks
again before each attempt, because DNS answers may change after the job was accepted, and then connects
to an address it checked (:func:`pinned_request`), so a name that resolves elsewhere a moment later
(DNS rebinding) cannot move the request to a private address.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from core.errors import InvalidWebhook

# IPv6 prefixes that carry an IPv4 address in their bits (RFC 6052 NAT64, RFC 3056 6to4).
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_6TO4 = ipaddress.IPv6Network("2002::/16")
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible ::a.b.c.d


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for: mapped, compatible, NAT64, 6to4 and Teredo
    (server and client); empty for a plain IPv6 address."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in net for net in _NAT64) or (ip in _COMPATIBLE and int(ip) > 1):
        found.append(low32)  # ::1 (loopback) and :: stay IPv6, refused as such
    return found


def _refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # is_global is False for loopback, private, link-local, shared (100.64/10), reserved, unspecified.
    if not ip.is_global or ip.is_multicast:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        # 64:ff9b::7f00:1 is global to Python, but a NAT64 gateway turns it into 127.0.0.1.
        return any(_refused(v4) for v4 in embedded_ipv4(ip))
    return False


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (an IP literal resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]).split("%")[0] for info in infos})


def check_webhook_url(url: str, *, allow_private: bool) -> list[str]:
    """Raises InvalidWebhook unless ``url`` is http(s) with a host whose every address is public.

    Returns:
        The checked addresses the host resolves to; empty when ``allow_private`` skips the check.
    """
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # "http://[::1/h": an unclosed bracket
        raise InvalidWebhook(f"webhook url {url!r} is malformed") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise InvalidWebhook(f"webhook url {url!r} must be an absolute http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidWebhook(f"webhook url {url!r} has an invalid port") from None
    if allow_private:
        return []
    try:
        addresses = resolve(hostname, port)
    except (OSError, UnicodeError) as exc:
        raise InvalidWebhook(f"webhook host {hostname!r} does not resolve: {exc}") from None
    refused = [a for a in addresses if _refused(ipaddress.ip_address(a))]
    if refused or not addresses:
        raise InvalidWebhook(
            f"webhook host {hostname!r} resolves to a loopback, private, link-local or reserved "
            f"address ({', '.join(refused)}); this deployment only calls public addresses",
            errors=[{"field": "webhook.url", "addresses": refused}],
        )
    return addresses


def refused_address(address: str) -> bool:
    """Whether a webhook may not reach ``address`` (an IP literal, as a socket reports it)."""
    return _refused(ipaddress.ip_address(address.split("%")[0]))


def pinned_request(url: str, address: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """``url`` rewritten to connect to ``address``, with the Host header and TLS name of the original host.

    Returns:
        ``(url, headers, extensions)`` for httpx: the request goes to the checked address while the server
        sees (and its certificate is verified for) the host the job named.
    """
    parts = urlsplit(url)
    hostname = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    host_header = parts.netloc.rpartition("@")[2]  # without any user:password@
    return parts._replace(netloc=netloc).geturl(), {"host": host_header}, {"sni_hostname": hostname}
