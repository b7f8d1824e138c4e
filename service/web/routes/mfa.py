"""The second factor for API clients: TOTP, recovery codes, and the login step that completes a
password login of a user who has one (``POST /login/mfa``). The use cases are in
``service/accounts/mfa.py``; passkeys have their own routes (``passkeys.py``)."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag_blueprint, validate_response

from service.core.errors import (
    AccountDisabled,
    CsrfFailed,
    EmailNotVerified,
    MfaConflict,
    MfaInvalid,
    NotFound,
    TooManyAttempts,
    ValidationFailed,
)
from service.web.guards import current_user, fresh_required, token_required
from service.web.http import (
    JSON_TYPE,
    NO_STORE,
    ModelResponse,
    documents_errors,
    documents_no_content,
    validate_body,
)
from service.web.mfa_schemas import (
    CodeRequest,
    MfaLoginOut,
    MfaLoginRequest,
    MfaStatusOut,
    RecoveryCodesOut,
    TotpSetupOut,
)
from service.web.passkey_schemas import PasskeyOut
from service.web.schemas import pair_out
from service.web.state import get_accounts
from service.web.transport import attach_session_cookies, client_info, require_same_site

blueprint = Blueprint("mfa", __name__)
tag_blueprint(blueprint, ["mfa"])

JSON_ONLY = (JSON_TYPE,)


@blueprint.get("/mfa")
@token_required
@validate_response(MfaStatusOut, 200)
async def mfa_status() -> MfaStatusOut:
    """Your second factors: TOTP on or off, recovery codes left, passkeys"""
    status = await get_accounts().mfa.status(current_user())
    return MfaStatusOut(
        totp=status.totp,
        recovery_codes_left=status.recovery_codes_left,
        passkeys=[PasskeyOut.model_validate(passkey) for passkey in status.passkeys],
    )


@blueprint.post("/mfa/totp/setup")
@fresh_required
@validate_response(TotpSetupOut, 200)
@documents_errors(MfaConflict)
async def totp_setup() -> ModelResponse:
    """Start setting up an authenticator app (fresh token required)

    A new key, as text, as an `otpauth://` URI and as a QR code (SVG). Nothing changes for
    your logins until `POST /mfa/totp/confirm` with a code from the app; a new setup replaces
    an unconfirmed one. While TOTP is on: 409 `MFA_CONFLICT` (turn it off first).
    """
    setup = await get_accounts().mfa.begin_totp_setup(current_user())
    body = TotpSetupOut(secret=setup.secret, otpauth_uri=setup.otpauth_uri, qr_svg=setup.qr_svg)
    return body, 200, NO_STORE


@blueprint.post("/mfa/totp/confirm")
@token_required
@validate_body(CodeRequest, media_types=JSON_ONLY)
@validate_response(RecoveryCodesOut, 200)
@documents_errors(MfaInvalid, MfaConflict, TooManyAttempts)
async def totp_confirm(data: CodeRequest) -> ModelResponse:
    """Turn the authenticator app on with its current code

    Answers 10 recovery codes, shown this once (each completes one login without the app).
    From now on a password login answers 403 `MFA_REQUIRED`. A wrong code: 401 `MFA_INVALID`,
    counted like a wrong password.
    """
    codes = await get_accounts().mfa.confirm_totp(current_user(), data.code, client=client_info())
    return RecoveryCodesOut(recovery_codes=codes), 200, NO_STORE


@blueprint.delete("/mfa/totp")
@fresh_required
@validate_body(CodeRequest, media_types=JSON_ONLY)
@documents_errors(MfaInvalid, NotFound, TooManyAttempts)
@documents_no_content
async def totp_disable(data: CodeRequest) -> tuple[str, int]:
    """Turn the authenticator app off (fresh token and a current code required)

    The code is one from the app, or a recovery code. Without a passkey left, the recovery
    codes go too.
    """
    await get_accounts().mfa.disable_totp(current_user(), data.code, client=client_info())
    return "", 204


@blueprint.post("/mfa/recovery-codes")
@fresh_required
@validate_response(RecoveryCodesOut, 200)
@documents_errors(MfaConflict)
async def recovery_codes() -> ModelResponse:
    """A new set of recovery codes (fresh token required)

    The old set stops working at once. Only with a second factor on (else 409 `MFA_CONFLICT`).
    """
    codes = await get_accounts().mfa.regenerate_recovery_codes(current_user())
    return RecoveryCodesOut(recovery_codes=codes), 200, NO_STORE


@blueprint.post("/login/mfa")
@validate_body(MfaLoginRequest, media_types=JSON_ONLY)
@validate_response(MfaLoginOut, 200)
@documents_errors(MfaInvalid, TooManyAttempts, AccountDisabled, EmailNotVerified, CsrfFailed)
async def login_mfa(data: MfaLoginRequest) -> ModelResponse:
    """Complete a login that answered 403 `MFA_REQUIRED`

    Send its `mfa_token` with a `code` (from the authenticator app, or a recovery code) or a
    passkey's `credential` (the assertion answering `POST /passkeys/login/options`
    `{"mfa_token"}`). Answers the token pair of a new session: fresh, with `amr` `["pwd",
    "otp"]` or `["pwd", "hwk"|"swk"]`; after a recovery code, `recovery_codes_left` too.
    The mfa_token works once and for at most 5 minutes; a wrong code leaves it usable until
    then (wrong codes are counted per account like wrong passwords: 429 after too many). When
    the login was a browser's `POST /session`, the session cookies are set as well and
    `csrf_token` is in the body (and, as for `POST /session`, another site's page is refused:
    403 `CSRF_FAILED`).
    """
    if (data.code is None) == (data.credential is None):
        problem = "Send either code or credential."
        raise ValidationFailed([{"loc": ["body", "code"], "msg": problem}], detail=problem)
    mfa = get_accounts().mfa
    if await mfa.is_cookie_login(data.mfa_token):
        # The cookies are this site's: another site's page may not complete the login.
        require_same_site()
    done = await mfa.complete_login(
        data.mfa_token, code=data.code, credential=data.credential, client=client_info()
    )
    pair = done.pair
    if pair.csrf is not None:
        attach_session_cookies(pair)
    body = MfaLoginOut(
        **pair_out(pair).model_dump(),
        recovery_codes_left=done.recovery_codes_left,
        csrf_token=pair.csrf,
    )
    return body, 200, NO_STORE
