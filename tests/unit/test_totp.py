"""TOTP codes: RFC 6238 values, drift of one step, and no reuse of an accepted step."""

from __future__ import annotations

import base64
import urllib.parse

import pyotp
import pytest

from fkod.core.auth import totp

# RFC 6238, appendix B: the SHA-1 secret is the ASCII "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
NOW = 1_111_111_109.0


def test_rfc6238_vector():
    # The RFC lists 8-digit codes; 6-digit codes are their last six digits.
    step = totp.current_step(59)

    assert step == 1
    assert totp.code_at_step(RFC_SECRET, step) == "287082"
    assert totp.code_at_step(RFC_SECRET, totp.current_step(NOW)) == "081804"


def test_new_secret_is_base32_160_bits():
    secret = totp.new_secret()

    assert len(secret) == 32
    assert len(base64.b32decode(secret)) == 20
    assert totp.new_secret() != secret


def test_current_code_matches_its_step():
    step = totp.current_step(NOW)
    code = totp.code_at_step(RFC_SECRET, step)

    assert totp.matching_step(RFC_SECRET, code, last_step=None, now=NOW) == step


@pytest.mark.parametrize("offset", [-1, 1])
def test_one_step_drift_accepted(offset):
    step = totp.current_step(NOW)
    code = totp.code_at_step(RFC_SECRET, step + offset)

    assert totp.matching_step(RFC_SECRET, code, last_step=None, now=NOW) == step + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_far_steps_rejected(offset):
    step = totp.current_step(NOW)
    code = totp.code_at_step(RFC_SECRET, step + offset)

    assert totp.matching_step(RFC_SECRET, code, last_step=None, now=NOW) is None


def test_used_step_rejected():
    step = totp.current_step(NOW)
    code = totp.code_at_step(RFC_SECRET, step)

    assert totp.matching_step(RFC_SECRET, code, last_step=step, now=NOW) is None


def test_earlier_step_after_later_rejected():
    step = totp.current_step(NOW)
    previous = totp.code_at_step(RFC_SECRET, step - 1)

    assert totp.matching_step(RFC_SECRET, previous, last_step=step, now=NOW) is None


def test_next_step_after_used_accepted():
    step = totp.current_step(NOW)
    following = totp.code_at_step(RFC_SECRET, step + 1)

    assert totp.matching_step(RFC_SECRET, following, last_step=step, now=NOW) == step + 1


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12345a", "１２３４５６", " 081804",
                                  None, 81804])
def test_malformed_code_rejected(code):
    assert totp.matching_step(RFC_SECRET, code, last_step=None, now=NOW) is None


def test_wrong_code_rejected():
    step = totp.current_step(NOW)
    right = totp.code_at_step(RFC_SECRET, step)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    assert totp.matching_step(RFC_SECRET, wrong, last_step=None, now=NOW) is None


def test_provisioning_uri_fields():
    uri = totp.provisioning_uri(RFC_SECRET, account="owner@acme.example", issuer="F-KOD")
    parsed = urllib.parse.urlparse(uri)
    query = urllib.parse.parse_qs(parsed.query)

    assert parsed.scheme == "otpauth"
    assert parsed.netloc == "totp"
    assert urllib.parse.unquote(parsed.path) == "/F-KOD:owner@acme.example"
    assert query["secret"] == [RFC_SECRET]
    assert query["issuer"] == ["F-KOD"]
    assert query.get("digits", ["6"]) == ["6"]
    assert query.get("period", ["30"]) == ["30"]


def test_codes_agree_with_pyotp_now():
    secret = totp.new_secret()

    assert totp.matching_step(secret, pyotp.TOTP(secret).now(), last_step=None) is not None
