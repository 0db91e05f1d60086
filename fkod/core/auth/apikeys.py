"""API key secrets: generation, the stored prefix and the peppered HMAC.

A key is ``sk_live_`` or ``sk_test_`` followed by 43 characters of base64url
(256 random bits). Only ``key_prefix`` (the mode prefix plus 8 characters) and
HMAC-SHA256 of the whole key under a server-side pepper are stored, so looking
a key up is one indexed equality query and a leaked table reveals no key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

from fkod.core.settings import ConfigurationError

LIVE_PREFIX = "sk_live_"
TEST_PREFIX = "sk_test_"
_SECRET_LENGTH = 43
_VISIBLE_CHARACTERS = 8
MIN_PEPPER_LENGTH = 32


def generate_key(livemode: bool) -> tuple[str, str]:
    """Return a new key and its stored prefix."""
    prefix = LIVE_PREFIX if livemode else TEST_PREFIX
    key = prefix + secrets.token_urlsafe(32)
    return key, key[: len(prefix) + _VISIBLE_CHARACTERS]


def looks_like_key(value: str) -> bool:
    """Check that ``value`` has the shape of a key, before any database lookup."""
    if not value.startswith((LIVE_PREFIX, TEST_PREFIX)):
        return False
    secret = value[len(LIVE_PREFIX):]
    return len(secret) == _SECRET_LENGTH and secret.isascii() and all(
        character.isalnum() or character in "-_" for character in secret
    )


class KeyHasher:
    """HMAC-SHA256 of keys under the server pepper."""

    def __init__(self, pepper: str):
        if len(pepper) < MIN_PEPPER_LENGTH:
            raise ConfigurationError(
                f"invalid setting fkod.secrets.api_key_pepper: expected at least "
                f"{MIN_PEPPER_LENGTH} characters, got {len(pepper)}"
            )
        self._pepper = pepper.encode()

    def hash(self, key: str) -> str:
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).hexdigest()


def address_allowed(allowed: list[str] | None, address: str | None) -> bool:
    """Check that ``address`` falls in one of the ranges; no ranges allow any address."""
    if not allowed:
        return True
    try:
        client = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if client.version == 6 and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    return any(client in ipaddress.ip_network(item) for item in allowed)
