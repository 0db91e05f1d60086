"""Password hashing with argon2id."""

from __future__ import annotations

import argon2

_hasher = argon2.PasswordHasher()

# Checked against when an email is unknown, so a login takes as long whether
# or not the account exists.
_DUMMY_HASH = _hasher.hash("not a real password")

MIN_LENGTH = 10
MAX_LENGTH = 256


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check ``password``; a missing hash is checked against a dummy to keep timing even."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
