"""HTTP glue the blueprints share: token pair bodies, client info, the session cookies."""

from __future__ import annotations

from quart import Response, after_this_request, request
from werkzeug.sansio.response import Response as BaseResponse
from werkzeug.wrappers import Response as WerkzeugResponse

from service import auth
from service.guards import ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE
from service.schemas import TokenPairOut
from service.state import get_state

AnyResponse = Response | WerkzeugResponse
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
REFRESH_COOKIE_PATH = "/refresh"


def pair_out(pair: auth.TokenPair) -> TokenPairOut:
    return TokenPairOut(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        refresh_expires_in=pair.refresh_expires_in,
    )


def client_info() -> auth.Client:
    return auth.Client(user_agent=request.headers.get("User-Agent"), ip=request.remote_addr)


def set_session_cookies(response: BaseResponse, pair: auth.TokenPair) -> None:
    """The browser session: HttpOnly token cookies, and a CSRF cookie scripts can read."""
    secure = get_state().settings.secure_cookies
    response.set_cookie(
        ACCESS_COOKIE,
        pair.access_token,
        max_age=pair.expires_in,
        httponly=True,
        secure=secure,
        samesite="Lax",
        path="/",
    )
    response.set_cookie(
        REFRESH_COOKIE,
        pair.refresh_token,
        max_age=pair.refresh_expires_in,
        httponly=True,
        secure=secure,
        samesite="Lax",
        path=REFRESH_COOKIE_PATH,
    )
    response.set_cookie(
        CSRF_COOKIE,
        pair.csrf or "",
        max_age=pair.refresh_expires_in,
        httponly=False,
        secure=secure,
        samesite="Lax",
        path="/",
    )


def clear_session_cookies(response: BaseResponse) -> None:
    secure = get_state().settings.secure_cookies
    for name, path in (
        (ACCESS_COOKIE, "/"),
        (REFRESH_COOKIE, REFRESH_COOKIE_PATH),
        (CSRF_COOKIE, "/"),
    ):
        response.delete_cookie(name, path=path, secure=secure, samesite="Lax", httponly=True)


def attach_session_cookies(pair: auth.TokenPair) -> None:
    """Set the session cookies on this request's response, whatever the view returns."""

    @after_this_request
    async def _set(response: AnyResponse) -> AnyResponse:
        set_session_cookies(response, pair)
        return response


def detach_session_cookies() -> None:
    @after_this_request
    async def _clear(response: AnyResponse) -> AnyResponse:
        clear_session_cookies(response)
        return response
