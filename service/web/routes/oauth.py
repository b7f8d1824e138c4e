"""The OAuth2 endpoints: the token endpoint (RFC 6749), introspection (RFC 7662) and
revocation (RFC 7009)."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote_plus

from quart import Blueprint, request
from quart_schema import security_scheme, tag_blueprint, validate_response

from service.core.errors import (
    AccountDisabled,
    ErrorCode,
    HashingBusy,
    InvalidClient,
    InvalidCredentials,
    MfaRequired,
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
from service.web.oauth_schemas import (
    ClientTokenOut,
    IntrospectionOut,
    RevocationOut,
    TokenGrantRequest,
    TokenQuery,
    TokenResponse,
)
from service.web.schemas import TokenOut, pair_out
from service.web.state import get_accounts
from service.web.transport import client_info

blueprint = Blueprint("oauth", __name__)
tag_blueprint(blueprint, ["auth"])

GRANT_TYPES = ("password", "refresh_token", "client_credentials")
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
@validate_response(TokenResponse, 200)
@documents_body(TokenGrantRequest, media_types=(FORM_TYPE, JSON_TYPE), errors=(PayloadTooLarge,))
@documents_errors(OAuthError, InvalidClient, MfaRequired, TooManyAttempts, HashingBusy)
async def token() -> ModelResponse:
    """OAuth2 token endpoint (RFC 6749)

    Form `grant_type=password` with `username` and `password`, `grant_type=refresh_token`
    with `refresh_token`, or `grant_type=client_credentials` with an optional `scope` (a machine
    client, authenticated by HTTP Basic `client_id:client_secret` or by the form's `client_id`
    and `client_secret`, never both; it gets an access token only). A JSON body
    `{"username", "password"}` (no `grant_type`) is accepted too. Errors follow RFC 6749 §5.2:
    status 400 and an `error` field (`invalid_request`, `invalid_grant`, `invalid_scope`,
    `unsupported_grant_type`); wrong or missing client credentials are 401 `invalid_client`
    with `WWW-Authenticate: Basic`. A password grant of a user with a second factor is 403
    `MFA_REQUIRED` with `"error": "mfa_required"`, `mfa_token`, `methods` and `expires_in`:
    complete the login at `POST /login/mfa`.
    """
    accounts = get_accounts()
    try:
        fields = _with_grant_type(await read_body((FORM_TYPE, JSON_TYPE)))
        data = parse_model(TokenGrantRequest, fields)
        if data.grant_type == "client_credentials":
            client_id, client_secret = _client_credentials(data.client_id, data.client_secret)
            machine = await accounts.clients.authenticate(
                client_id, client_secret, client=client_info()
            )
            issued = await accounts.clients.issue_token(machine, data.scope)
            return TokenResponse(ClientTokenOut.of(issued)), 200, NO_STORE
        if data.grant_type == "refresh_token":
            if not data.refresh_token:
                raise _missing("refresh_token")
            pair = await accounts.refresh(data.refresh_token, client=client_info())
        else:
            if data.username is None or data.password is None:
                raise _missing(*(n for n in ("username", "password") if getattr(data, n) is None))
            _, pair = await accounts.login(data.username, data.password, client=client_info())
    except (ValidationFailed, UnsupportedMediaType, InvalidCredentials) as exc:
        raise OAuthError.from_api_error(exc) from None
    except MfaRequired as exc:
        raise exc.for_token_endpoint() from None
    except REFUSED_GRANTS as exc:
        raise OAuthError("invalid_grant", exc.code, exc.detail) from None
    body = TokenOut(**pair_out(pair).model_dump(), token=pair.access_token, user_id=pair.user_id)
    return TokenResponse(body), 200, NO_STORE


@blueprint.post("/introspect")
@security_scheme([{"clientBasic": []}])
@validate_response(IntrospectionOut, 200)
@documents_body(TokenQuery, media_types=(FORM_TYPE,), errors=(PayloadTooLarge,))
@documents_errors(OAuthError, InvalidClient, TooManyAttempts)
async def introspect() -> ModelResponse:
    """Token introspection (RFC 7662)

    For machine clients: authenticate (HTTP Basic `client_id:client_secret`, or the form's
    `client_id` and `client_secret`) and send the form `token` (optional `token_type_hint`).
    Any token that is not currently valid (bad signature, expired, revoked, spent, unknown) is
    `{"active": false}`; a valid one is `active` with its claims: `username` and `sid` for a
    user's token, `scope` and `client_id` for a client's.
    """
    accounts = get_accounts()
    data = await _token_query()
    client_id, client_secret = _client_credentials(data.client_id, data.client_secret)
    await accounts.clients.authenticate(client_id, client_secret, client=client_info())
    token_value = _required_token(data)
    answer = await accounts.clients.introspect(token_value, data.token_type_hint)
    return IntrospectionOut.model_validate(answer), 200, NO_STORE


@blueprint.post("/revoke")
@security_scheme([{"clientBasic": []}, {}])
@validate_response(RevocationOut, 200)
@documents_body(TokenQuery, media_types=(FORM_TYPE,), errors=(PayloadTooLarge,))
@documents_errors(OAuthError, InvalidClient, TooManyAttempts)
async def revoke() -> ModelResponse:
    """Token revocation (RFC 7009)

    Form `token` (optional `token_type_hint`). Client authentication is optional (holding the
    token is enough), but credentials that are sent must be right (401 `invalid_client`). A
    refresh token ends its session; an access token, a user's or a client's, stops working.
    The answer is 200 whatever the token was, valid or not; the effect is immediate in every
    process.
    """
    accounts = get_accounts()
    data = await _token_query()
    client_id, client_secret = _client_credentials(data.client_id, data.client_secret)
    if client_id is not None or client_secret is not None:
        await accounts.clients.authenticate(client_id, client_secret, client=client_info())
    await accounts.clients.revoke(_required_token(data), data.token_type_hint)
    return RevocationOut(), 200, NO_STORE


async def _token_query() -> TokenQuery:
    if not request.content_length and not request.mimetype:
        # No body at all: nothing to parse, and a caller without credentials learns that it
        # must authenticate (401 invalid_client), not how to format a body.
        return TokenQuery()
    try:
        return parse_model(TokenQuery, await read_body((FORM_TYPE,)))
    except (ValidationFailed, UnsupportedMediaType) as exc:
        raise OAuthError.from_api_error(exc) from None


def _required_token(data: TokenQuery) -> str:
    if not data.token:
        raise OAuthError.from_api_error(_missing("token"))
    return data.token


def _client_credentials(
    form_id: str | None, form_secret: str | None
) -> tuple[str | None, str | None]:
    """The client's ``(client_id, client_secret)``: from HTTP Basic (RFC 6749 §2.3.1: each part
    form-urlencoded, then base64) or from the body, never both; ``(None, None)`` when none."""
    basic = _basic_credentials(request.headers.get("Authorization"))
    if basic is None:
        return form_id or None, form_secret or None
    if form_id or form_secret:
        raise OAuthError(
            "invalid_request",
            ErrorCode.BAD_REQUEST,
            "Authenticate the client one way: HTTP Basic, or client_id and client_secret in "
            "the body, not both.",
        )
    return basic


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(client_id, client_secret)`` of an ``Authorization: Basic`` header; None for another
    scheme or none; InvalidClient when it cannot be read."""
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        client_id, separator, client_secret = decoded.partition(":")
        if not separator:
            raise ValueError("no colon")
        return (
            unquote_plus(client_id, errors="strict"),
            unquote_plus(client_secret, errors="strict"),
        )
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise InvalidClient("The HTTP Basic credentials cannot be read.") from None


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
