"""HTTP glue the blueprints share: token pair bodies, client info, the session cookies."""

from __future__ import annotations

from quart import Response, after_this_request, request
from werkzeug.sansio.response import Response as BaseResponse
from werkzeug.wrappers import Response as WerkzeugResponse

from service.accounts import auth
from service.accounts.throttle import REFRESH_SCOPE
from service.core.audit import audit
from service.core.errors import APIError, TooManyAttempts
from service.store.models import User
from service.web.guards import ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE
from service.web.schemas import SignupRequest, TokenPairOut
from service.web.state import get_state

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


def _ip() -> str:
    return request.remote_addr or "unknown"


async def password_login(
    username: str, password: str, *, cookie: bool
) -> tuple[User, auth.TokenPair]:
    """Check the password under the login throttle, then start a session.

    Shared by /login, /token, /session and the login page: one set of counters for them all.
    """
    state = get_state()
    user = await auth.authenticate(
        state.database,
        state.hasher,
        login=username,
        password=password,
        throttle=state.throttle,
        ip=_ip(),
    )
    return user, await start_session(user, with_csrf=cookie)


async def signup_user(data: SignupRequest) -> User:
    """Create the account of a valid signup (JSON API and signup page alike)."""
    state = get_state()
    return await auth.register(
        state.database,
        state.hasher,
        username=data.username,
        email=data.email,
        password=data.password,
        name=data.name,
    )


async def start_session(user: User, *, with_csrf: bool) -> auth.TokenPair:
    """A new login session for ``user``, from this request's client."""
    state = get_state()
    return await auth.start_session(
        state.database,
        state.tokens,
        user,
        policy=state.policy,
        client=client_info(),
        hooks=state.hooks,
        with_csrf=with_csrf,
    )


async def throttled_refresh(raw_token: str, *, cookie: bool) -> auth.TokenPair:
    """Rotate a refresh token; failed refreshes from one address are throttled (each takes
    its place before the token is checked; a success gives it back)."""
    state = get_state()
    throttle = state.throttle
    attempt = None
    if throttle is not None:
        try:
            attempt = await throttle.attempt(REFRESH_SCOPE, account=None, ip=_ip())
        except TooManyAttempts:
            audit("refresh", outcome="throttled")
            raise
    try:
        pair = await auth.refresh_session(
            state.database,
            state.tokens,
            raw_token,
            policy=state.policy,
            hooks=state.hooks,
            csrf_header=request.headers.get("X-CSRF-Token"),
            cookie=cookie,
        )
    except APIError as exc:
        if throttle is not None and attempt is not None and exc.status != 401:
            await throttle.abandoned(attempt)  # only refused tokens count
        audit("refresh", outcome="refused", code=exc.code.value)
        raise
    except BaseException:
        if throttle is not None and attempt is not None:
            await throttle.abandoned(attempt)
        raise
    if throttle is not None and attempt is not None:
        await throttle.succeeded(attempt)
    return pair
