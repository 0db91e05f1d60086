"""Encryption at rest of webhook signing secrets (Fernet from ``cryptography``).

Signing secrets must be readable to sign deliveries, so they are encrypted,
not hashed.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from fkod.core.settings import ConfigurationError


class SecretVault:
    def __init__(self, key: str):
        try:
            self._fernet = Fernet(key.encode())
        except (ValueError, TypeError):
            raise ConfigurationError(
                "invalid setting fkod.secrets.webhook_encryption_key: expected a Fernet key, "
                "the urlsafe base64 of 32 bytes (python -c \"from cryptography.fernet import "
                "Fernet; print(Fernet.generate_key().decode())\")"
            ) from None

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError(
                "a stored webhook secret cannot be decrypted; was "
                "fkod.secrets.webhook_encryption_key changed?"
            ) from None
