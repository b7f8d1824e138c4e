"""Secrets at rest: AES-256-GCM with a key derived (HKDF-SHA256) from a configured key.

Pure: no settings, no database. A sealed value is ``v1.<base64url(nonce || ciphertext)>``; the
``purpose`` is bound in as associated data, so a value sealed for one purpose (or one user)
does not open as another.
"""

from __future__ import annotations

import base64
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "v1"
NONCE_BYTES = 12


class SealedValueInvalid(Exception):
    """The value was not sealed with this key for this purpose, or was altered."""


class SecretBox:
    def __init__(self, key_material: bytes, *, info: bytes = b"auth-service secretbox v1") -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key_material)
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, *, purpose: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), purpose.encode())
        return f"{VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def open(self, value: str, *, purpose: str) -> str:
        version, _, body = value.partition(".")
        if version != VERSION or not body:
            raise SealedValueInvalid()
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode())
        except (ValueError, InvalidTag) as exc:
            raise SealedValueInvalid() from exc
        return plain.decode()
