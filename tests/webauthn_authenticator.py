"""A software WebAuthn authenticator for the tests: one ES256 (P-256) credential, made and used
as a browser would send it (``PublicKeyCredential.toJSON()``).

It builds what a real authenticator and browser build: ``clientDataJSON`` (type, challenge,
origin, crossOrigin), ``authenticatorData`` (rpIdHash, flags UP/UV/BE/BS/AT, signCount, and at
registration the attested credential: AAGUID, credential id, COSE key), an attestation object
of format "none", and assertion signatures over ``authenticatorData || SHA-256(clientDataJSON)``.
Every knob a test needs to make a wrong one is an argument: origin, RP ID, challenge, flags,
counter.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def private_key_from_pem(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


@dataclass
class SoftAuthenticator:
    """One discoverable credential. ``sign_count`` is the counter of the last signature;
    ``counter_step`` 0 makes a counterless authenticator (as synced passkeys are)."""

    rp_id: str
    origin: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: os.urandom(16))
    aaguid: bytes = bytes(16)
    user_handle: bytes | None = None
    backup_eligible: bool = False
    backed_up: bool = False
    sign_count: int = 0
    counter_step: int = 1
    transports: tuple[str, ...] = ("internal",)

    # --- pieces ---------------------------------------------------------------------------

    def cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def flags(self, *, up: bool, uv: bool, attested: bool) -> int:
        value = (UP if up else 0) | (UV if uv else 0)
        value |= (BE if self.backup_eligible else 0) | (BS if self.backed_up else 0)
        return value | (AT if attested else 0)

    def authenticator_data(
        self, *, rp_id: str | None, up: bool, uv: bool, sign_count: int, attested: bool
    ) -> bytes:
        data = hashlib.sha256((rp_id or self.rp_id).encode()).digest()
        data += bytes([self.flags(up=up, uv=uv, attested=attested)])
        data += struct.pack(">I", sign_count)
        if attested:
            data += self.aaguid + struct.pack(">H", len(self.credential_id)) + self.credential_id
            data += self.cose_key()
        return data

    @staticmethod
    def client_data(kind: str, challenge: str, origin: str, *, cross_origin: bool) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": cross_origin},
            separators=(",", ":"),
        ).encode()

    # --- the ceremonies -------------------------------------------------------------------

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        challenge: str | None = None,
        up: bool = True,
        uv: bool = True,
        cross_origin: bool = False,
    ) -> dict[str, Any]:
        """``navigator.credentials.create()`` on these creation options (JSON form)."""
        self.user_handle = unb64url(options["user"]["id"])
        client_data = self.client_data(
            "webauthn.create",
            challenge or options["challenge"],
            origin or self.origin,
            cross_origin=cross_origin,
        )
        auth_data = self.authenticator_data(
            rp_id=rp_id, up=up, uv=uv, sign_count=self.sign_count, attested=True
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": list(self.transports),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        challenge: str | None = None,
        up: bool = True,
        uv: bool = True,
        sign_count: int | None = None,
        user_handle: bytes | None = None,
        cross_origin: bool = False,
    ) -> dict[str, Any]:
        """``navigator.credentials.get()`` on these request options (JSON form)."""
        if sign_count is None:
            self.sign_count += self.counter_step
            sign_count = self.sign_count
        client_data = self.client_data(
            "webauthn.get",
            challenge or options["challenge"],
            origin or self.origin,
            cross_origin=cross_origin,
        )
        auth_data = self.authenticator_data(
            rp_id=rp_id, up=up, uv=uv, sign_count=sign_count, attested=False
        )
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        handle = user_handle if user_handle is not None else self.user_handle
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(handle) if handle is not None else None,
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }
