"""The OAuth2 endpoints (RFC 6749 token endpoint)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request
from quart_schema import tag_blueprint, validate_response

from service.core.errors import (
    AccountDisabled,
    ErrorCode,
    HashingBusy,
    InvalidCredentials,
    OAuthError,
    PayloadTooLarge,
    TokenExpired,
    TokenInvalid,
    TokenReused,
    TokenRevoked,
    TooManyAttempts,
    UnsupportedMediaType,
    ValidationFailed,
    WrongTokenType,
)
from service.web.http import (
    FORM_TYPE,
    JSON_TYPE,
    NO_STORE,
    ModelResponse,
    documents_body,
    documents_errors,
    parse_model,
    read_body,
)
from service.web.schemas import TokenOut, TokenRequest, pair_out
from service.web.state import get_accounts
from service.web.transport import client_info

blueprint = Blueprint("oauth", __name__)
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
