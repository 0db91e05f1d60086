"""Password hashing with argon2id, with costs taken from the settings."""

from __future__ import annotations

import argon2

MIN_LENGTH = 10
MAX_LENGTH = 256


class PasswordHasher:
    """Hash and check passwords; a hash made with older costs is upgraded at the next login."""

    def __init__(self, *, time_cost: int, memory_kib: int):
        self._hasher = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        # Checked when an email is unknown, so a failed login takes as long
        # whether or not the account exists.
        self._dummy_hash = self._hasher.hash("not a real password")

    @classmethod
    def from_settings(cls, settings: dict) -> PasswordHasher:
        return cls(time_cost=settings["fkod.auth.argon2_time_cost"],
                   memory_kib=settings["fkod.auth.argon2_memory_kib"])

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Check ``password``; a missing hash is checked against a dummy to keep timing even."""
        try:
            matched = self._hasher.verify(password_hash or self._dummy_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
        return matched and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
