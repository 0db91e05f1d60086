"""Access tokens: JWTs signed with an EC P-256 key (ES256) that has a key id.

The public key is published at ``/.well-known/jwks.json``. Login tokens carry
``sub`` (the user), ``email``, ``company``, ``scopes``, ``jti``, ``iat`` and
``exp``, plus ``partner_id`` and ``role`` when the user acts for a partner.
Logout revokes one ``jti``; a password change, a reset or "log out
everywhere" refuses every token with an ``iat`` before
``User.tokens_valid_after`` (see :mod:`fkod.core.auth.security`).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from fkod.core.settings import ConfigurationError

log = logging.getLogger(__name__)

ALGORITHM = "ES256"
LOGIN_AUDIENCE = "fkod-portal-api"


class InvalidToken(Exception):
    """The token is malformed, forged, expired or not meant for us."""


class TokenSigner:
    """Sign and verify access tokens with one private key."""

    def __init__(self, key: ECKey, *, issuer: str, ttl_seconds: int):
        self.key = key
        self.key_id = key.thumbprint()
        self.issuer = issuer
        self.ttl_seconds = ttl_seconds

    def issue(self, claims: dict, *, audience: str = LOGIN_AUDIENCE,
              ttl_seconds: int | None = None,
              min_issued_at: int | None = None) -> tuple[str, int]:
        """Return a signed token with the standard claims added, and its lifetime in seconds.

        ``min_issued_at`` (Unix seconds) raises ``iat`` to at least that moment.
        A user's tokens issued before ``User.tokens_valid_after`` are refused,
        and that moment is rounded up to a whole second, so a token issued in
        the same second after a revocation must carry the later ``iat``.
        """
        now = int(time.time())
        if min_issued_at is not None:
            now = max(now, min_issued_at)
        ttl = ttl_seconds or self.ttl_seconds
        payload = {
            "iss": self.issuer,
            "aud": audience,
            "iat": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(12),
            **claims,
        }
        header = {"alg": ALGORITHM, "kid": self.key_id, "typ": "JWT"}
        return jwt.encode(header, payload, self.key), ttl

    def verify(self, token: str, *, audience: str = LOGIN_AUDIENCE) -> dict:
        """Return the claims of a valid token, or raise :class:`InvalidToken`."""
        try:
            decoded = jwt.decode(token, self.key, algorithms=[ALGORITHM])
            if decoded.header.get("kid") != self.key_id:
                raise InvalidToken("unknown key id")
            registry = jwt.JWTClaimsRegistry(
                leeway=30,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": audience},
                exp={"essential": True},
                sub={"essential": True},
            )
            registry.validate(decoded.claims)
        except (JoseError, ValueError, TypeError, UnicodeError) as exc:
            raise InvalidToken(str(exc) or type(exc).__name__) from None
        return decoded.claims

    def jwks(self) -> dict:
        public = self.key.as_dict(private=False)
        return {"keys": [{**public, "kid": self.key_id, "use": "sig", "alg": ALGORITHM}]}


def load_signing_key(settings: dict) -> ECKey:
    """Read the signing key from the PEM setting or file.

    Outside production a missing key file is created, so a development
    checkout needs no set-up step; production never creates keys.
    """
    pem = settings["fkod.secrets.jwt_private_key"]
    path = settings["fkod.secrets.jwt_private_key_file"]
    if pem:
        return _import(pem, "fkod.secrets.jwt_private_key")
    if not path:
        raise ConfigurationError(
            "missing setting fkod.secrets.jwt_private_key: set it (PEM) or "
            "fkod.secrets.jwt_private_key_file (a PEM file)"
        )
    key_file = Path(path)
    if not key_file.exists():
        if settings["fkod.environment"] == "production":
            raise ConfigurationError(
                f"invalid setting fkod.secrets.jwt_private_key_file: {path} does not exist"
            )
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key = ECKey.generate_key("P-256")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.as_pem(private=True))
        log.info("created a development signing key", extra={"path": str(key_file)})
    return _import(key_file.read_bytes(), "fkod.secrets.jwt_private_key_file")


def _import(pem, setting_name: str) -> ECKey:
    try:
        key = ECKey.import_key(pem)
    except (JoseError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"invalid setting {setting_name}: expected an EC P-256 private key in PEM ({exc})"
        ) from None
    if key.as_dict(private=True).get("crv") != "P-256" or not key.is_private:
        raise ConfigurationError(
            f"invalid setting {setting_name}: expected an EC P-256 private key in PEM"
        )
    return key
