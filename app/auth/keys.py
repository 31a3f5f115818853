"""API key format and hashing.

A key reads ``nnc_<prefix>_<secret>``. The prefix (12 hex digits, stored in clear) finds the row
and identifies the key in listings; the whole key is stored only as HMAC-SHA256 under the
deployment's pepper. The secret holds 256 random bits, so a fast hash is enough: nobody can guess
through it, and the pepper keeps a leaked table from being checked offline against guesses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "nnc_"
_DEFAULT_PEPPER = b"nncompress-api-key-v1"


def generate_key() -> tuple[str, str]:
    """A fresh key and its lookup prefix."""
    prefix = secrets.token_hex(6)
    return f"{PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def split_key(key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    if not key.startswith(PREFIX):
        return None
    prefix, sep, secret = key[len(PREFIX) :].partition("_")
    if not sep or len(prefix) != 12 or len(secret) < 20:
        return None
    return prefix


def hash_key(key: str, pepper: str | None) -> str:
    return hmac.new(pepper.encode() if pepper else _DEFAULT_PEPPER, key.encode(), hashlib.sha256).hexdigest()


def matches(key: str, stored_hash: str, pepper: str | None) -> bool:
    return hmac.compare_digest(hash_key(key, pepper), stored_hash)


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
