"""Time-based one-time passwords (RFC 6238) as the second login factor, with pyotp.

Codes have 6 digits and a 30-second time step, the defaults every
authenticator app uses. A code is accepted for the current step and one step
either side, to allow for clock drift, and only for a step later than the
last one accepted, so a code that was seen once cannot be used again.
"""

from __future__ import annotations

import hmac
import time

import pyotp

DIGITS = 6
STEP_SECONDS = 30
# Steps accepted before and after the current one.
DRIFT_STEPS = 1
CODE_PATTERN = r"^[0-9]{6}$"


def new_secret() -> str:
    """Return a new random secret: 32 base32 characters, 160 bits."""
    return pyotp.random_base32()


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """Return the ``otpauth://totp/…`` URI that an authenticator app reads from a QR code."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=account, issuer_name=issuer)


def current_step(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // STEP_SECONDS)


def code_at_step(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def matching_step(secret: str, code: str, *, last_step: int | None,
                  now: float | None = None) -> int | None:
    """Return the time step that ``code`` belongs to, or None when it is wrong or used.

    Only steps within ``DRIFT_STEPS`` of the current one and later than
    ``last_step`` (the last step accepted for this secret) are tried. Store the
    returned step as the new ``last_step``.
    """
    if not isinstance(code, str) or len(code) != DIGITS or not code.isascii() \
            or not code.isdigit():
        return None
    step = current_step(now)
    for candidate in range(step - DRIFT_STEPS, step + DRIFT_STEPS + 1):
        if last_step is not None and candidate <= last_step:
            continue
        if hmac.compare_digest(code_at_step(secret, candidate), code):
            return candidate
    return None
