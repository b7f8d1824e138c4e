"""How a token travels, apart from what it is: the bearer header, the session cookies, the CSRF
proof, the request's origin, and who the client is. Each is read from the request here, once.
"""

from __future__ import annotations

from typing import Literal

from quart import Response, after_this_request, has_websocket_context, request, websocket
from werkzeug.sansio.request import Request as BaseRequest
from werkzeug.sansio.response import Response as BaseResponse
from werkzeug.wrappers import Response as WerkzeugResponse

from service.accounts import ClientInfo, TokenPair
from service.core.errors import CsrfFailed, TokenMissing
from service.core.tokens import Claims
from service.web.state import get_state

AnyResponse = Response | WerkzeugResponse
Transport = Literal["header", "cookie"]

ACCESS_COOKIE = "access_token_cookie"
REFRESH_COOKIE = "refresh_token_cookie"
CSRF_COOKIE = "csrf_access_token"
CSRF_HEADER = "X-CSRF-Token"
REFRESH_COOKIE_PATH = "/refresh"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def incoming() -> BaseRequest:
    """The request, or on a ``websocket`` route its handshake (the same headers and cookies)."""
    return websocket if has_websocket_context() else request


def bearer_token(refusal: str | None = None) -> str | None:
    """The ``Authorization: Bearer`` token; None without the header; TokenMissing (``refusal``
    as its detail) when the header is there but carries no bearer token."""
    return _bearer_of(incoming(), refusal)


def _bearer_of(asked: BaseRequest, refusal: str | None = None) -> str | None:
    header = asked.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    raise TokenMissing(refusal)


def access_token() -> tuple[str, Transport]:
    """The access token as Bearer, else from its cookie; TokenMissing when neither was sent."""
    return access_token_of(incoming())


def access_token_of(asked: BaseRequest) -> tuple[str, Transport]:
    """``access_token`` of a request (or handshake) the caller already holds."""
    token = _bearer_of(asked)
    if token is not None:
        return token, "header"
    cookie = asked.cookies.get(ACCESS_COOKIE)
    if cookie:
        return cookie, "cookie"
    raise TokenMissing()


def check_csrf(claims: Claims) -> None:
    """For cookie-borne tokens on unsafe methods: the request comes from this site, and the
    header echoes the token's ``csrf``. A WebSocket handshake on the cookie (a GET that opens a
    two-way channel, which no CSRF header can accompany) must come from this site or an
    allowed origin: cross-site WebSocket hijacking is refused."""
    if has_websocket_context():
        require_same_site()
        return
    if request.method in SAFE_METHODS:
        return
    require_same_site()
    if not claims.csrf_matches(request.headers.get(CSRF_HEADER)):
        raise CsrfFailed()


def from_this_site() -> bool:
    """The cross-site check (``service/web/origin.py``) on this request's headers."""
    asked = incoming()
    headers = asked.headers
    return get_state().origins.allows(
        origin=headers.get("Origin"), fetch_site=headers.get("Sec-Fetch-Site"), host=asked.host
    )


def require_same_site() -> None:
    """CsrfFailed (403) for a request another site's page made the browser send."""
    if not from_this_site():
        raise CsrfFailed("The request came from another site.")


def client_info() -> ClientInfo:
    return ClientInfo(user_agent=request.headers.get("User-Agent"), ip=request.remote_addr)


def set_session_cookies(response: BaseResponse, pair: TokenPair) -> None:
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


def attach_session_cookies(pair: TokenPair) -> None:
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
