"""The passkey routes' request and response models (``routes/passkeys.py``).

The WebAuthn options keep the field names of the WebAuthn Level 3 JSON forms
(``PublicKeyCredentialCreationOptionsJSON``, ``PublicKeyCredentialRequestOptionsJSON``), so a
browser's ``PublicKeyCredential.parseCreationOptionsFromJSON`` takes them as they are: binary
values are base64url text. A credential comes back as the browser's
``PublicKeyCredential.toJSON()``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints

from service.accounts.passkeys import NAME_MAX
from service.web.schemas import CookieLoginOut, Request, TokenPairOut

# Control characters are refused by ``Request`` (422).
PasskeyName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX)
]
Credential = Annotated[
    dict[str, Any],
    Field(
        description=(
            "The credential as the browser's `PublicKeyCredential.toJSON()` gives it: `id`, "
            "`rawId`, `type`, `response` (base64url fields), `clientExtensionResults`, "
            "`authenticatorAttachment`."
        )
    ),
]


class PasskeyRegistration(Request):
    credential: Credential
    name: PasskeyName | None = Field(
        default=None, description='Defaults to "Passkey N" (N: how many you have, plus one).'
    )


class PasskeyRename(Request):
    name: PasskeyName


class PasskeyLoginOptionsRequest(Request):
    mfa_token: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description=(
            "The `mfa_token` of a password login that answered `MFA_REQUIRED`: options for "
            "that login's passkeys. Leave the body out for a passwordless login."
        ),
    )


class PasskeyLogin(Request):
    credential: Credential
    session: Literal["token", "cookie"] = Field(
        default="token",
        description=(
            '"token" (default): the token pair in the body. "cookie" (a browser page of this '
            "site): the session cookies are set, and the body is the user and its "
            "`csrf_token`, as `POST /session` answers."
        ),
    )


class PasskeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None


PasskeyList = RootModel[list[PasskeyOut]]


class PasskeyLoginOut(RootModel[TokenPairOut | CookieLoginOut]):
    """The token pair, or for ``"session": "cookie"`` the user and its ``csrf_token``."""


class RelyingPartyEntity(BaseModel):
    id: str
    name: str


class PasskeyUserEntity(BaseModel):
    id: str = Field(description="The user handle: the 16 bytes of the user's id, base64url.")
    name: str
    displayName: str


class CredentialParameters(BaseModel):
    type: Literal["public-key"]
    alg: int = Field(description="A COSE algorithm: -7 ES256, -8 EdDSA, -257 RS256.")


class CredentialDescriptor(BaseModel):
    id: str
    type: Literal["public-key"]
    transports: list[str] = []


class AuthenticatorSelection(BaseModel):
    residentKey: str
    requireResidentKey: bool
    userVerification: str


class CreationOptionsOut(BaseModel):
    """``PublicKeyCredentialCreationOptionsJSON``: pass to ``navigator.credentials.create``."""

    rp: RelyingPartyEntity
    user: PasskeyUserEntity
    challenge: str
    pubKeyCredParams: list[CredentialParameters]
    timeout: int
    excludeCredentials: list[CredentialDescriptor]
    authenticatorSelection: AuthenticatorSelection
    attestation: Literal["none"]


class RequestOptionsOut(BaseModel):
    """``PublicKeyCredentialRequestOptionsJSON``: pass to ``navigator.credentials.get``."""

    challenge: str
    timeout: int
    rpId: str
    allowCredentials: list[CredentialDescriptor]
    userVerification: Literal["required", "preferred", "discouraged"]
