"""Signup, login, the OAuth2 token endpoint, refresh and logout."""

from __future__ import annotations

from quart import Blueprint, request, url_for
from quart_schema import security_scheme, tag_blueprint, validate_response

from service.core.errors import (
    CsrfFailed,
    HashingBusy,
    InvalidCredentials,
    MfaRequired,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
    TokenReused,
    TokenRevoked,
    TooManyAttempts,
    UserExists,
    WrongTokenType,
)
from service.web.guards import current_claims, current_user, token_required
from service.web.http import (
    FORM_TYPE,
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
from service.web.schemas import (
    LoginRequest,
    RefreshRequest,
    SignupRequest,
    TokenPairOut,
    UserOut,
    pair_out,
)
from service.web.state import get_accounts
from service.web.transport import (
    CSRF_HEADER,
    REFRESH_COOKIE,
    attach_session_cookies,
    bearer_token,
    client_info,
    require_same_site,
)

blueprint = Blueprint("auth", __name__)
tag_blueprint(blueprint, ["auth"])

REFRESH_ERRORS = (TokenMissing, TokenInvalid, TokenExpired, TokenRevoked, TokenReused)


@blueprint.post("/signup")
@validate_body(SignupRequest)
@validate_response(UserOut, 201)
@documents_errors(UserExists, HashingBusy)
async def signup(data: SignupRequest) -> ModelResponse:
    """Create an account

    JSON or form body. Usernames and emails are unique in any letter case.
    """
    user = await get_accounts().register(
        username=data.username, email=data.email, password=data.password, name=data.name
    )
    location = url_for("users.user_by_id", user_id=user.id)
    return UserOut.model_validate(user), 201, {"Location": location}


@blueprint.post("/login")
@validate_body(LoginRequest)
@validate_response(TokenPairOut, 200)
@documents_errors(InvalidCredentials, MfaRequired, TooManyAttempts, HashingBusy)
async def login(data: LoginRequest) -> ModelResponse:
    """Log in with a username (or email) and password

    Starts a session (device) and returns a fresh access token and a refresh token.
    A user with a second factor gets 403 `MFA_REQUIRED` instead, with `mfa_token`, `methods`
    and `expires_in`: complete the login at `POST /login/mfa`.
    """
    _, pair = await get_accounts().login(data.username, data.password, client=client_info())
    return pair_out(pair), 200, NO_STORE


async def _presented_refresh_token() -> tuple[str, bool]:
    """The refresh token: as Bearer, as JSON ``refresh_token``, or as the refresh cookie."""
    token = bearer_token("Send the refresh token as 'Authorization: Bearer <refresh token>'.")
    if token is not None:
        return token, False
    # The body is optional here: an empty one (a generated client sends its Content-Type
    # anyway) is no body.
    if request.content_length != 0 and (request.content_length or request.mimetype):
        body = parse_model(RefreshRequest, await read_body((JSON_TYPE, FORM_TYPE)))
        if body.refresh_token:
            return body.refresh_token, False
    cookie = request.cookies.get(REFRESH_COOKIE)
    if cookie:
        return cookie, True
    raise TokenMissing("Send the refresh token as Bearer, as JSON refresh_token, or as cookie.")


@blueprint.post("/refresh")
# The refresh token as Bearer (its own scheme, so no client sends the access token here), or
# none: then it comes in the body or as the cookie.
@security_scheme([{"refreshToken": []}, {}])
@validate_response(TokenPairOut, 200)
@documents_body(RefreshRequest, required=False)
@documents_errors(*REFRESH_ERRORS, WrongTokenType, CsrfFailed, TooManyAttempts)
async def refresh() -> ModelResponse:
    """Rotate a refresh token

    Send it as `Authorization: Bearer`, as JSON `refresh_token`, or as the refresh cookie (with
    `X-CSRF-Token`). The token is spent: presenting it again later is reuse (401
    `TOKEN_REUSED`) and revokes the session, except for a retry within a short grace window.
    """
    raw, from_cookie = await _presented_refresh_token()
    if from_cookie:
        require_same_site()
    pair = await get_accounts().refresh(
        raw,
        client=client_info(),
        csrf_header=request.headers.get(CSRF_HEADER),
        cookie=from_cookie,
    )
    if from_cookie:
        attach_session_cookies(pair)
    return pair_out(pair), 200, NO_STORE


@blueprint.post("/logout")
@token_required
@documents_errors(TokenRevoked)
@documents_no_content
async def logout() -> tuple[str, int]:
    """Log out: revoke this access token and its session"""
    await get_accounts().logout(current_claims())
    return "", 204


@blueprint.post("/logout/all")
@token_required
@documents_errors(TokenRevoked)
@documents_no_content
async def logout_all() -> tuple[str, int]:
    """Log out everywhere: revoke every session and token of this user"""
    await get_accounts().logout_all(current_user().id)
    return "", 204
