"""Access tokens: JWTs signed with an EC P-256 key (ES256) that has a key id.

The public key is published at ``/.well-known/jwks.json``. Login tokens carry
``sub`` (the user), ``email``, ``company``, ``scopes``, ``jti``, ``iat`` and
``exp``, plus ``partner_id`` and ``role`` when the user acts for a partner.
Logout revokes one ``jti``; a password change, a reset or "log out
everywhere" refuses every token with an ``iat`` before
``User.tokens_valid_after`` (see :mod:`fkod.core.auth.security`).

OAuth access tokens use the same key with the audience ``fkod-api``
(:data:`OAUTH_AUDIENCE`); the gateway verifies them.

Rotating the signing key: move the current key's public half into
``fkod.secrets.jwt_previous_public_keys`` (or the file that
``fkod.secrets.jwt_previous_public_keys_file`` names), then install the new
private key. The previous keys are published in ``/.well-known/jwks.json``
beside the current one, and tokens they signed keep verifying, matched by key
id. Keep an old key there until every token it signed has expired: one hour
for OAuth access tokens, and ``fkod.auth.access_token_ttl_seconds`` for login
tokens. Then remove it, and its tokens stop working at once.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import secrets
import time
from pathlib import Path

from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import ECKey

from fkod.core.settings import ConfigurationError

log = logging.getLogger(__name__)

ALGORITHM = "ES256"
LOGIN_AUDIENCE = "fkod-portal-api"
OAUTH_AUDIENCE = "fkod-api"

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


class InvalidToken(Exception):
    """The token is malformed, forged, expired or not meant for us."""


class ExpiredToken(InvalidToken):
    """The token is genuine but its ``exp`` has passed; ``claims`` are its verified claims."""

    def __init__(self, message: str, claims: dict):
        super().__init__(message)
        self.claims = claims


class TokenSigner:
    """Sign access tokens with one private key; verify them with it or a previous public key.

    ``previous_keys`` are the public keys that signed before the last
    rotations. Tokens they signed verify until the operator removes them.
    """

    def __init__(self, key: ECKey, *, issuer: str, ttl_seconds: int,
                 previous_keys: tuple[ECKey, ...] | list[ECKey] = ()):
        self.key = key
        self.key_id = key.thumbprint()
        self.issuer = issuer
        self.ttl_seconds = ttl_seconds
        self._verifying_keys: dict[str, ECKey] = {self.key_id: key}
        self.add_previous_keys(previous_keys)

    @property
    def previous_key_ids(self) -> list[str]:
        return [kid for kid in self._verifying_keys if kid != self.key_id]

    def add_previous_keys(self, keys) -> None:
        """Accept and publish ``keys`` (public EC P-256 keys) beside the current key."""
        for key in keys:
            self._verifying_keys.setdefault(key.thumbprint(), key)

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
        """Return the claims of a valid token, or raise :class:`InvalidToken`.

        The header must name ES256 and the id of the current or a previous
        key; the signature is checked with that key only. A genuine token
        whose ``exp`` has passed raises :class:`ExpiredToken`.
        """
        header = unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("the algorithm must be ES256")
        kid = header.get("kid")
        key = self._verifying_keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("unknown key id")
        try:
            decoded = jwt.decode(token, key, algorithms=[ALGORITHM])
            registry = jwt.JWTClaimsRegistry(
                leeway=30,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": audience},
                exp={"essential": True},
                sub={"essential": True},
            )
            registry.validate(decoded.claims)
        except ExpiredTokenError:
            raise ExpiredToken("the token has expired", dict(decoded.claims)) from None
        except (JoseError, ValueError, TypeError, UnicodeError) as exc:
            raise InvalidToken(str(exc) or type(exc).__name__) from None
        return decoded.claims

    def jwks(self) -> dict:
        """Return the JSON Web Key Set: the current key first, then the previous ones."""
        return {"keys": [{**key.as_dict(private=False), "kid": kid, "use": "sig",
                          "alg": ALGORITHM}
                         for kid, key in self._verifying_keys.items()]}


def issuer_url(settings: dict) -> str:
    """Return the scheme, host and port that the OAuth server's published URLs start with."""
    return (settings["fkod.auth.oauth_issuer_url"]
            or settings["fkod.auth.account_link_base_url"]).rstrip("/")


def token_issuer(settings: dict) -> str:
    """Return the iss claim of signed tokens; the OAuth metadata names it as the issuer."""
    return settings["fkod.auth.jwt_issuer"] or issuer_url(settings)


def unverified_header(token: str) -> dict:
    """Return the JOSE header of a compact JWS without checking anything else.

    Raises :class:`InvalidToken` when the token is not three dot-separated
    parts with a JSON object as header.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("expected three dot-separated parts")
    try:
        raw = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeError):
        raise InvalidToken("the header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise InvalidToken("the header is not a JSON object")
    return header


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


def load_previous_public_keys(settings: dict) -> list[ECKey]:
    """Read the previous public keys from their PEM setting and file; both may be empty.

    Each contains zero or more PEM blocks one after the other. A private key is
    accepted too, and only its public half is kept.
    """
    keys = []
    sources = (("fkod.secrets.jwt_previous_public_keys",
                settings.get("fkod.secrets.jwt_previous_public_keys") or ""),
               ("fkod.secrets.jwt_previous_public_keys_file",
                settings.get("fkod.secrets.jwt_previous_public_keys_file") or ""))
    for name, value in sources:
        if not value.strip():
            continue
        if name.endswith("_file"):
            try:
                data = Path(value).read_bytes()
            except OSError as exc:
                raise ConfigurationError(f"invalid setting {name}: cannot read {value} "
                                         f"({exc.strerror})") from None
        else:
            data = value.encode()
        blocks = [match.group(0) for match in _PEM_BLOCK.finditer(data)]
        if not blocks:
            raise ConfigurationError(f"invalid setting {name}: expected PEM public keys")
        keys.extend(_import_public(block, name) for block in blocks)
    return keys


def _import_public(pem: bytes, setting_name: str) -> ECKey:
    try:
        key = ECKey.import_key(pem)
    except (JoseError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"invalid setting {setting_name}: expected EC P-256 public keys in PEM ({exc})"
        ) from None
    public = key.as_dict(private=False)
    if public.get("crv") != "P-256":
        raise ConfigurationError(
            f"invalid setting {setting_name}: expected EC P-256 public keys in PEM"
        )
    return ECKey.import_key(public)
