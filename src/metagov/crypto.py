"""Encryption of plugin secrets at rest.

MultiFernet encrypts with the first key and decrypts with any, so keys can be rotated: put a new key
first in ``METAGOV_SECRET_KEYS``, run ``metagov keys rotate``, then drop the old key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretDecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key."""


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one key is required")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, values: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(values).encode()).decode()

    def decrypt(self, token: str) -> dict[str, Any]:
        try:
            data = json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise SecretDecryptionError(
                "stored secrets cannot be decrypted with METAGOV_SECRET_KEYS"
            ) from None
        if not isinstance(data, dict):
            raise SecretDecryptionError("stored secrets are not an object")
        return data

    def encrypt_text(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt_text(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretDecryptionError(
                "stored secrets cannot be decrypted with METAGOV_SECRET_KEYS"
            ) from None

    def rotate(self, token: str) -> str:
        """Re-encrypt ``token`` under the first (newest) key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretDecryptionError(
                "stored secrets cannot be decrypted with METAGOV_SECRET_KEYS"
            ) from None


def generate_key() -> str:
    return Fernet.generate_key().decode()
