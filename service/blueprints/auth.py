"""Signup, login and the OAuth2 token endpoint."""

from __future__ import annotations

from quart import Blueprint, url_for
from quart_schema import tag_blueprint, validate_response

from service import auth
from service.errors import (
    ErrorCode,
    InvalidCredentials,
    OAuthError,
    PayloadTooLarge,
    UnsupportedMediaType,
    UserExists,
    ValidationFailed,
)
from service.http import (
    FORM_TYPE,
    JSON_TYPE,
    ModelResponse,
    documents_body,
    documents_errors,
    parse_model,
    read_body,
    validate_body,
)
from service.schemas import (
    LoginRequest,
    SignupRequest,
    TokenOut,
    TokenPairOut,
    TokenRequest,
    UserOut,
)
from service.state import get_state

blueprint = Blueprint("auth", __name__)
tag_blueprint(blueprint, ["auth"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _pair_out(pair: auth.TokenPair) -> TokenPairOut:
    return TokenPairOut(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        refresh_expires_in=pair.refresh_expires_in,
    )


@blueprint.post("/signup")
@validate_body(SignupRequest)
@validate_response(UserOut, 201)
@documents_errors(UserExists)
async def signup(data: SignupRequest) -> ModelResponse:
    """Create an account

    JSON or form body. Usernames and emails are unique in any letter case.
    """
    state = get_state()
    user = await auth.register(
        state.database,
        state.hasher,
        username=data.username,
        email=data.email,
        password=data.password,
        name=data.name,
    )
    location = url_for("users.user_by_id", user_id=user.id)
    return UserOut.model_validate(user), 201, {"Location": location}


@blueprint.post("/login")
@validate_body(LoginRequest)
@validate_response(TokenPairOut, 200)
@documents_errors(InvalidCredentials)
async def login(data: LoginRequest) -> ModelResponse:
    """Log in with a username (or email) and password

    Returns a fresh access token and a refresh token.
    """
    state = get_state()
    user = await auth.authenticate(
        state.database, state.hasher, login=data.username, password=data.password
    )
    pair = auth.issue_token_pair(state.tokens, user, fresh=True)
    return _pair_out(pair), 200, NO_STORE


@blueprint.post("/token")
@validate_response(TokenOut, 200)
@documents_body(TokenRequest, media_types=(FORM_TYPE, JSON_TYPE), errors=(PayloadTooLarge,))
@documents_errors(OAuthError)
async def token() -> ModelResponse:
    """OAuth2 token endpoint (RFC 6749)

    Form `grant_type=password` with `username` and `password`, or a JSON body
    `{"username", "password"}`. Errors follow RFC 6749 §5.2 (status 400, an `error` field).
    """
    try:
        data = parse_model(TokenRequest, await read_body((FORM_TYPE, JSON_TYPE)))
        if data.grant_type != "password":
            raise OAuthError(
                "unsupported_grant_type",
                ErrorCode.UNSUPPORTED_GRANT_TYPE,
                f"grant_type={data.grant_type} is not supported yet.",
            )
        if data.username is None or data.password is None:
            raise ValidationFailed(
                [
                    {"loc": ["body", name], "msg": "Field required"}
                    for name in ("username", "password")
                    if getattr(data, name) is None
                ]
            )
        state = get_state()
        user = await auth.authenticate(
            state.database, state.hasher, login=data.username, password=data.password
        )
    except (ValidationFailed, UnsupportedMediaType, InvalidCredentials) as exc:
        raise OAuthError.from_api_error(exc) from None
    pair = auth.issue_token_pair(state.tokens, user, fresh=True)
    body = TokenOut(**_pair_out(pair).model_dump(), token=pair.access_token, user_id=pair.user_id)
    return body, 200, NO_STORE
