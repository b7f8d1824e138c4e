"""Passkeys (WebAuthn) for API clients and the pages' scripts: registration, the list, deletion,
and passwordless login with discoverable credentials. The use cases are in
``service/accounts/passkeys.py``."""

from __future__ import annotations

import uuid

from quart import Blueprint, request
from quart_schema import tag_blueprint, validate_response

from service.core.errors import (
    AccountDisabled,
    CsrfFailed,
    EmailNotVerified,
    InvalidCredentials,
    MfaInvalid,
    NotFound,
    PasskeyExists,
    TooManyAttempts,
)
from service.web.guards import current_user, fresh_required, token_required
from service.web.http import (
    JSON_TYPE,
    NO_STORE,
    ModelResponse,
    documents_body,
    documents_errors,
    documents_no_content,
    parse_model,
    read_body,
    validate_body,
)
from service.web.passkey_schemas import (
    CreationOptionsOut,
    PasskeyList,
    PasskeyLogin,
    PasskeyLoginOptionsRequest,
    PasskeyLoginOut,
    PasskeyOut,
    PasskeyRegistration,
    PasskeyRename,
    RequestOptionsOut,
)
from service.web.schemas import CookieLoginOut, UserOut, pair_out
from service.web.state import get_accounts
from service.web.transport import attach_session_cookies, client_info, require_same_site

blueprint = Blueprint("passkeys", __name__)
tag_blueprint(blueprint, ["mfa"])

JSON_ONLY = (JSON_TYPE,)


@blueprint.post("/passkeys/register/options")
@fresh_required
@validate_response(CreationOptionsOut, 200)
async def passkey_registration_options() -> ModelResponse:
    """Start adding a passkey (fresh token required)

    The creation options for `navigator.credentials.create()`: a discoverable credential
    (resident key required), user verification preferred, your passkeys excluded, no
    attestation, ES256, EdDSA or RS256. The challenge is kept by the service, works once, and
    expires after `AUTH_PASSKEY_CHALLENGE_TTL` seconds. RP ID and origin come from
    `AUTH_PUBLIC_URL`.
    """
    options = await get_accounts().passkeys.registration_options(current_user())
    return CreationOptionsOut.model_validate(options), 200, NO_STORE


@blueprint.post("/passkeys/register")
@token_required
@validate_body(PasskeyRegistration, media_types=JSON_ONLY)
@validate_response(PasskeyOut, 201)
@documents_errors(PasskeyExists)
async def register_passkey(data: PasskeyRegistration) -> ModelResponse:
    """Add a passkey with the credential the browser created

    The credential must answer a live challenge of `POST /passkeys/register/options` made for
    you (the fresh login is checked there), from this service's origin and RP ID; otherwise
    422 on `credential`. A credential registered already is 409.
    """
    passkey = await get_accounts().passkeys.register(current_user(), data.credential, data.name)
    return PasskeyOut.model_validate(passkey), 201, NO_STORE


@blueprint.get("/passkeys")
@token_required
@validate_response(PasskeyList, 200)
async def passkeys() -> PasskeyList:
    """Your passkeys, oldest first, with when each was last used"""
    passkeys = await get_accounts().passkeys.list(current_user())
    return PasskeyList([PasskeyOut.model_validate(passkey) for passkey in passkeys])


@blueprint.patch("/passkeys/<uuid:passkey_id>")
@token_required
@validate_body(PasskeyRename, media_types=JSON_ONLY)
@validate_response(PasskeyOut, 200)
@documents_errors(NotFound)
async def rename_passkey(passkey_id: uuid.UUID, data: PasskeyRename) -> PasskeyOut:
    """Rename a passkey (1 to 64 characters)

    Another user's passkey is 404, whether or not it exists.
    """
    passkey = await get_accounts().passkeys.rename(current_user(), passkey_id, data.name)
    return PasskeyOut.model_validate(passkey)


@blueprint.delete("/passkeys/<uuid:passkey_id>")
@fresh_required
@documents_errors(NotFound)
@documents_no_content
async def delete_passkey(passkey_id: uuid.UUID) -> tuple[str, int]:
    """Delete a passkey (fresh token required)

    It no longer signs you in, nor completes a password login. Another user's passkey is 404.
    """
    await get_accounts().passkeys.delete(current_user(), passkey_id)
    return "", 204


@blueprint.post("/passkeys/login/options")
@validate_response(RequestOptionsOut, 200)
@documents_body(PasskeyLoginOptionsRequest, media_types=JSON_ONLY, required=False)
@documents_errors(MfaInvalid, TooManyAttempts)
async def passkey_login_options() -> ModelResponse:
    """Start a passkey login

    Without a body (or without `mfa_token`): the request options of a passwordless login for
    `navigator.credentials.get()`: discoverable credentials (`allowCredentials` empty, no
    username), user verification required. With `{"mfa_token"}` of a password login that
    answered `MFA_REQUIRED`: options for that user's passkeys (user verification preferred),
    whose assertion completes `POST /login/mfa` `{"mfa_token", "credential"}`; an mfa_token
    that is not live (or whose user has no passkey) is 401 `MFA_INVALID`. The mfa_token is not
    spent here. The challenge works once and expires after `AUTH_PASSKEY_CHALLENGE_TTL`.
    Every request counts against its address (429 + `Retry-After` past 30 a minute or
    300 an hour): each one stores a challenge.
    """
    mfa_token = None
    # The body is optional: an empty one (a client that sends its Content-Type anyway) is none.
    if request.content_length != 0 and (request.content_length or request.mimetype):
        body = parse_model(PasskeyLoginOptionsRequest, await read_body(JSON_ONLY))
        mfa_token = body.mfa_token
    options = await get_accounts().passkeys.login_options(mfa_token=mfa_token, client=client_info())
    return RequestOptionsOut.model_validate(options), 200, NO_STORE


@blueprint.post("/passkeys/login")
@validate_body(PasskeyLogin, media_types=JSON_ONLY)
@validate_response(PasskeyLoginOut, 200)
@documents_errors(
    InvalidCredentials, AccountDisabled, EmailNotVerified, TooManyAttempts, CsrfFailed
)
async def passkey_login(data: PasskeyLogin) -> ModelResponse:
    """Log in with a passkey (no username, no password)

    The assertion of a discoverable credential answering a live challenge of
    `POST /passkeys/login/options`, with user verification. Starts a session (device) with
    fresh tokens whose `amr` is `["hwk"]` for a device-bound passkey or `["swk"]` for a synced
    one (backup eligible). Any assertion that does not verify (unknown credential, a
    `userHandle` that is not its owner's, a spent or expired challenge, a signature counter
    that did not increase: a cloned authenticator) is 401 `INVALID_CREDENTIALS`, throttled per
    client address. With `"session": "cookie"` (this site's pages only: another site's is 403
    `CSRF_FAILED`) the session cookies are set and the body is the user with its `csrf_token`,
    as `POST /session` answers; the tokens stay in HttpOnly cookies.
    """
    cookie = data.session == "cookie"
    if cookie:
        require_same_site()
    user, pair = await get_accounts().passkeys.login(
        data.credential, client=client_info(), with_csrf=cookie
    )
    if cookie:
        attach_session_cookies(pair)
        body = CookieLoginOut(
            **UserOut.model_validate(user).model_dump(), csrf_token=pair.csrf or ""
        )
        return PasskeyLoginOut(body), 200, NO_STORE
    return PasskeyLoginOut(pair_out(pair)), 200, NO_STORE
