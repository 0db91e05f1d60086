"""Signing key rotation: previous public keys verify their tokens and appear in the JWKS."""

from __future__ import annotations

import time

import pytest
from joserfc.jwk import ECKey

from fkod.core.auth.tokens import (
    OAUTH_AUDIENCE,
    ExpiredToken,
    InvalidToken,
    TokenSigner,
    load_previous_public_keys,
)
from fkod.core.settings import ConfigurationError
from fkod.core.testing import TestClient

CLAIMS = {"sub": "user_1", "client_id": "app", "scope": "users:read", "partner_id": 1,
          "livemode": False}


def signer(key: ECKey, previous=(), issuer: str = "fkod") -> TokenSigner:
    return TokenSigner(key, issuer=issuer, ttl_seconds=3600, previous_keys=previous)


def public_pem(key: ECKey) -> str:
    return key.as_pem(private=False).decode()


@pytest.fixture
def old_key():
    return ECKey.generate_key("P-256")


@pytest.fixture
def new_key():
    return ECKey.generate_key("P-256")


def test_previous_key_token_verifies(old_key, new_key):
    token, _ttl = signer(old_key).issue(CLAIMS, audience=OAUTH_AUDIENCE)
    previous = load_previous_public_keys({"fkod.secrets.jwt_previous_public_keys":
                                          public_pem(old_key)})
    rotated = signer(new_key, previous)

    claims = rotated.verify(token, audience=OAUTH_AUDIENCE)

    assert claims["sub"] == "user_1"
    assert rotated.previous_key_ids == [old_key.thumbprint()]
    new_token, _ttl = rotated.issue(CLAIMS, audience=OAUTH_AUDIENCE)
    assert rotated.verify(new_token, audience=OAUTH_AUDIENCE)["client_id"] == "app"


def test_token_of_removed_key_refused(old_key, new_key):
    token, _ttl = signer(old_key).issue(CLAIMS, audience=OAUTH_AUDIENCE)

    with pytest.raises(InvalidToken, match="unknown key id"):
        signer(new_key).verify(token, audience=OAUTH_AUDIENCE)


def test_unknown_kid_refused(old_key, new_key):
    stranger = ECKey.generate_key("P-256")
    token, _ttl = signer(stranger).issue(CLAIMS, audience=OAUTH_AUDIENCE)

    with pytest.raises(InvalidToken, match="unknown key id"):
        signer(new_key, [old_key]).verify(token, audience=OAUTH_AUDIENCE)


def test_mismatched_kid_refused(old_key, new_key):
    """A token naming the current key id but signed by a previous key is refused."""
    forger = signer(old_key)
    forger.key_id = new_key.thumbprint()
    token, _ttl = forger.issue(CLAIMS, audience=OAUTH_AUDIENCE)

    with pytest.raises(InvalidToken):
        signer(new_key, [old_key]).verify(token, audience=OAUTH_AUDIENCE)


def test_jwks_lists_current_then_previous(old_key, new_key):
    keys = signer(new_key, [ECKey.import_key(public_pem(old_key))]).jwks()["keys"]

    assert [key["kid"] for key in keys] == [new_key.thumbprint(), old_key.thumbprint()]
    for key in keys:
        assert "d" not in key
        assert key["alg"] == "ES256"
        assert key["use"] == "sig"


def test_expired_token_of_previous_key(old_key, new_key):
    now = int(time.time())
    token, _ttl = signer(old_key).issue({**CLAIMS, "iat": now - 7200, "exp": now - 3600},
                                        audience=OAUTH_AUDIENCE)

    with pytest.raises(ExpiredToken) as raised:
        signer(new_key, [old_key]).verify(token, audience=OAUTH_AUDIENCE)
    assert raised.value.claims["client_id"] == "app"


def test_previous_keys_from_file_and_setting(tmp_path, old_key, new_key):
    third = ECKey.generate_key("P-256")
    path = tmp_path / "previous.pem"
    path.write_text(public_pem(old_key) + public_pem(new_key))

    keys = load_previous_public_keys({
        "fkod.secrets.jwt_previous_public_keys_file": str(path),
        # A private key is accepted and only its public half kept.
        "fkod.secrets.jwt_previous_public_keys": third.as_pem(private=True).decode(),
    })

    assert sorted(key.thumbprint() for key in keys) == sorted(
        key.thumbprint() for key in (old_key, new_key, third))
    assert not any(key.is_private for key in keys)


def test_no_previous_keys_by_default():
    assert load_previous_public_keys({}) == []
    assert load_previous_public_keys({"fkod.secrets.jwt_previous_public_keys": "  "}) == []


@pytest.mark.parametrize("value, message", [
    ("not a key", "expected PEM public keys"),
    ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "EC P-256"),
])
def test_invalid_previous_keys(value, message):
    with pytest.raises(ConfigurationError, match=message):
        load_previous_public_keys({"fkod.secrets.jwt_previous_public_keys": value})


def test_missing_previous_keys_file(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_previous_public_keys({"fkod.secrets.jwt_previous_public_keys_file":
                                   str(tmp_path / "missing.pem")})


def test_app_publishes_previous_keys(app_factory, old_key):
    app = app_factory(**{"fkod.secrets.jwt_previous_public_keys": public_pem(old_key)})
    client = TestClient(app)
    current = app.registry["token_signer"].key_id

    keys = client.web.get("/.well-known/jwks.json", status=200).json["keys"]

    assert [key["kid"] for key in keys] == [current, old_key.thumbprint()]
    issuer = app.registry["token_signer"].issuer
    token, _ttl = signer(old_key, issuer=issuer).issue(CLAIMS, audience=OAUTH_AUDIENCE)
    assert app.registry["token_signer"].verify(token, audience=OAUTH_AUDIENCE)["sub"] == "user_1"
