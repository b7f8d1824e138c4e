"""Signup, login, the OAuth2 token endpoint, refresh and logout."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request, url_for
from quart_schema import tag_blueprint, validate_response

from service.core.errors import (
    AccountDisabled,
    CsrfFailed,
    ErrorCode,
    HashingBusy,
    InvalidCredentials,
    OAuthError,
    PayloadTooLarge,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
    TokenReused,
    TokenRevoked,
    TooManyAttempts,
    UnsupportedMediaType,
    UserExists,
    ValidationFailed,
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
    TokenOut,
    TokenPairOut,
    TokenRequest,
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

GRANT_TYPES = ("password", "refresh_token")
# What a refresh token grant can be refused for: RFC 6749 §5.2 invalid_grant, not a 401.
REFUSED_GRANTS = (
    TokenInvalid,
    TokenExpired,
    TokenRevoked,
    TokenReused,
    WrongTokenType,
    AccountDisabled,
)
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
@documents_errors(InvalidCredentials, TooManyAttempts, HashingBusy)
async def login(data: LoginRequest) -> ModelResponse:
    """Log in with a username (or email) and password

    Starts a session (device) and returns a fresh access token and a refresh token.
    """
    _, pair = await get_accounts().login(data.username, data.password, client=client_info())
    return pair_out(pair), 200, NO_STORE


@blueprint.post("/token")
@validate_response(TokenOut, 200)
@documents_body(TokenRequest, media_types=(FORM_TYPE, JSON_TYPE), errors=(PayloadTooLarge,))
@documents_errors(OAuthError, TooManyAttempts, HashingBusy)
async def token() -> ModelResponse:
    """OAuth2 token endpoint (RFC 6749)

    Form `grant_type=password` with `username` and `password`, or `grant_type=refresh_token`
    with `refresh_token`; a JSON body `{"username", "password"}` (no `grant_type`) is accepted
    too. Errors follow RFC 6749 §5.2: status 400 and an `error` field (`invalid_request`,
    `invalid_grant`, `unsupported_grant_type`).
    """
    try:
        fields = _with_grant_type(await read_body((FORM_TYPE, JSON_TYPE)))
        data = parse_model(TokenRequest, fields)
        if data.grant_type == "refresh_token":
            if not data.refresh_token:
                raise _missing("refresh_token")
            pair = await get_accounts().refresh(data.refresh_token, client=client_info())
        else:
            if data.username is None or data.password is None:
                raise _missing(*(n for n in ("username", "password") if getattr(data, n) is None))
            _, pair = await get_accounts().login(data.username, data.password, client=client_info())
    except (ValidationFailed, UnsupportedMediaType, InvalidCredentials) as exc:
        raise OAuthError.from_api_error(exc) from None
    except REFUSED_GRANTS as exc:
        raise OAuthError("invalid_grant", exc.code, exc.detail) from None
    body = TokenOut(**pair_out(pair).model_dump(), token=pair.access_token, user_id=pair.user_id)
    return body, 200, NO_STORE


def _with_grant_type(body: dict[str, Any]) -> dict[str, Any]:
    """The body once its grant type is known: only a JSON body may omit it (the password grant).

    A parameter sent without a value counts as omitted (RFC 6749 §3.2); an unknown grant type is
    ``unsupported_grant_type`` (§5.2), not a validation error.
    """
    grant_type = body.get("grant_type")
    if grant_type is None or grant_type == "":
        if request.mimetype == FORM_TYPE:
            raise _missing("grant_type")
        return {**body, "grant_type": "password"}
    if isinstance(grant_type, str) and grant_type not in GRANT_TYPES:
        raise OAuthError(
            "unsupported_grant_type",
            ErrorCode.UNSUPPORTED_GRANT_TYPE,
            f"The grant_type must be one of: {', '.join(GRANT_TYPES)}.",
        )
    return body


def _missing(*names: str) -> ValidationFailed:
    return ValidationFailed([{"loc": ["body", name], "msg": "Field required"} for name in names])


async def _presented_refresh_token() -> tuple[str, bool]:
    """The refresh token: as Bearer, as JSON ``refresh_token``, or as the refresh cookie."""
    token = bearer_token("Send the refresh token as 'Authorization: Bearer <refresh token>'.")
    if token is not None:
        return token, False
    if request.content_length or request.mimetype:
        body = parse_model(RefreshRequest, await read_body((JSON_TYPE, FORM_TYPE)))
        if body.refresh_token:
            return body.refresh_token, False
    cookie = request.cookies.get(REFRESH_COOKIE)
    if cookie:
        return cookie, True
    raise TokenMissing("Send the refresh token as Bearer, as JSON refresh_token, or as cookie.")


@blueprint.post("/refresh")
@validate_response(TokenPairOut, 200)
@documents_body(RefreshRequest)
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
