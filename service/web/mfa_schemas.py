"""The second factor's request and response models (``routes/mfa.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from service.web.passkey_schemas import PasskeyOut
from service.web.schemas import Request, TokenPairOut

Code = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description=(
            "A 6-digit code of the authenticator app, or a recovery code (`xxxxx-xxxxx`, any "
            "case, dashes optional)."
        ),
    ),
]


class MfaStatusOut(BaseModel):
    totp: bool = Field(description="Whether an authenticator app (TOTP) is on.")
    recovery_codes_left: int
    passkeys: list[PasskeyOut]


class TotpSetupOut(BaseModel):
    secret: str = Field(description="The base32 key, for typing into the app by hand.")
    otpauth_uri: str = Field(description="The `otpauth://totp/...` URI the QR code holds.")
    qr_svg: str = Field(description="The QR code of `otpauth_uri`, an SVG document.")


class CodeRequest(Request):
    code: Code


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str] = Field(
        description="10 single-use codes, shown this once: the service keeps only their hashes."
    )


class MfaLoginRequest(Request):
    mfa_token: str = Field(min_length=1, max_length=256)
    code: Code | None = None
    credential: dict[str, Any] | None = Field(
        default=None,
        description=(
            "A passkey's assertion (`PublicKeyCredential.toJSON()`) answering the options of "
            '`POST /passkeys/login/options` `{"mfa_token"}`.'
        ),
    )


class MfaLoginOut(TokenPairOut):
    recovery_codes_left: int | None = Field(
        default=None, description="After a recovery code: how many unused ones are left."
    )
    csrf_token: str | None = Field(
        default=None,
        description=(
            "When the step completes a browser's cookie login (`POST /session`): the session "
            "cookies are set too, and this is the value to echo in `X-CSRF-Token`."
        ),
    )
