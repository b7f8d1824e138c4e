"""The browser session: log in to cookies (with CSRF protection) and log out of them."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag_blueprint, validate_response

from service.core.errors import HashingBusy, InvalidCredentials, MfaRequired, TooManyAttempts
from service.web.guards import current_claims, same_site_required, token_required
from service.web.http import (
    NO_STORE,
    ModelResponse,
    documents_errors,
    documents_no_content,
    validate_body,
)
from service.web.schemas import CookieLoginOut, LoginRequest, UserOut
from service.web.state import get_accounts
from service.web.transport import attach_session_cookies, client_info, detach_session_cookies

blueprint = Blueprint("browser", __name__)
tag_blueprint(blueprint, ["auth"])


@blueprint.post("/session")
@same_site_required
@validate_body(LoginRequest)
@validate_response(CookieLoginOut, 200)
@documents_errors(InvalidCredentials, MfaRequired, TooManyAttempts, HashingBusy)
async def create_session(data: LoginRequest) -> ModelResponse:
    """Log in a browser: sets the session cookies

    Refused (403 `CSRF_FAILED`) when another site's page sent it (`Origin`, `Sec-Fetch-Site`).
    `access_token_cookie` and `refresh_token_cookie` are HttpOnly and SameSite=Lax (Secure
    outside development); `csrf_access_token` is readable by scripts, to be echoed in
    `X-CSRF-Token` on unsafe requests. A user with a second factor gets 403 `MFA_REQUIRED`
    instead (no cookies), with `mfa_token`, `methods` and `expires_in`: completing the login
    at `POST /login/mfa` sets the cookies then.
    """
    user, pair = await get_accounts().login(
        data.username, data.password, client=client_info(), with_csrf=True
    )
    attach_session_cookies(pair)
    body = CookieLoginOut(**UserOut.model_validate(user).model_dump(), csrf_token=pair.csrf or "")
    return body, 200, NO_STORE


@blueprint.delete("/session")
@token_required
@documents_no_content
async def delete_session() -> tuple[str, int]:
    """Log a browser out: revokes the session and clears its cookies"""
    await get_accounts().logout(current_claims())
    detach_session_cookies()
    return "", 204
