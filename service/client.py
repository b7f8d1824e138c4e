"""An async client for the auth service's API: log in once, send the bearer token, refresh once.

For scripts, other services and load tools making many concurrent requests (httpx only, no
Quart). When the access token runs out, whether the client sees it coming (``refresh_margin``
before ``expires_in`` ends) or the server answers 401 ``TOKEN_EXPIRED``, exactly one
``POST /refresh`` is made however many requests are in flight: they all wait for it and retry
once with the new token. A second 401 is handed back, never retried again.

The server spends a refresh token when it rotates it and treats a spent token shown again as
theft (``TOKEN_REUSED``: the whole session is revoked), so a refresh token is presented once.
The one exception is a refresh that got no usable answer (network error, 5xx, 429): the token
may or may not have been spent, and the server's grace window exists for exactly that retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
# Answers after which the refresh token may still be unspent, or spent but retried in grace.
_TRANSIENT_STATUSES = frozenset({408, 429})


class AuthClientError(Exception):
    """Base of this module's errors; ``status``, ``code`` and ``detail`` echo the server."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail

    @classmethod
    def from_response(cls, message: str, response: httpx.Response) -> Self:
        code, detail = _problem(response)
        suffix = f": {response.status_code} {code}" if code else f": {response.status_code}"
        return cls(message + suffix, status=response.status_code, code=code, detail=detail)


class LoginFailed(AuthClientError):
    """``POST /login`` was refused (``INVALID_CREDENTIALS``, ``TOO_MANY_ATTEMPTS``...)."""


class NotLoggedIn(AuthClientError):
    """There is no session: log in first (or again)."""


class SessionEnded(NotLoggedIn):
    """The server refused the refresh token (``TOKEN_REUSED``, ``TOKEN_REVOKED``,
    ``TOKEN_EXPIRED``...): the session is over; log in again."""


class RefreshUnavailable(AuthClientError):
    """The refresh got no usable answer (network error, 5xx, 429). The session is kept: the
    next request tries again."""


@dataclass(frozen=True)
class _Session:
    access_token: str
    refresh_token: str
    expires_at: float  # on the client's clock
    lifetime: float
    generation: int


class AuthClient:
    """``async with AuthClient(url) as api: await api.login(u, p); await api.get("/me")``.

    Share one instance between the tasks of one event loop.

    ``refresh_margin``: refresh this many seconds before the access token runs out (at most a
    tenth of its lifetime); ``None`` refreshes only when the server answers ``TOKEN_EXPIRED``.
    """

    def __init__(
        self,
        base_url: httpx.URL | str = "",
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | float = 10.0,
        limits: httpx.Limits = DEFAULT_LIMITS,
        headers: Mapping[str, str] | None = None,
        refresh_margin: float | None = 30.0,
        login_path: str = "/login",
        refresh_path: str = "/refresh",
        logout_path: str = "/logout",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, transport=transport, timeout=timeout, limits=limits, headers=headers
        )
        self._refresh_margin = refresh_margin
        self._login_path = login_path
        self._refresh_path = refresh_path
        self._logout_path = logout_path
        self._clock = clock
        self._session: _Session | None = None
        self._generation = 0
        self._ended: SessionEnded | None = None
        # The refresh in flight and the generation it replaces.
        self._refreshing: tuple[int, asyncio.Task[_Session]] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._refreshing is not None:
            self._refreshing[1].cancel()
        await self._http.aclose()

    @property
    def access_token(self) -> str | None:
        return self._session.access_token if self._session else None

    @property
    def refresh_token(self) -> str | None:
        return self._session.refresh_token if self._session else None

    async def login(self, username: str, password: str) -> dict[str, Any]:
        """Start a session; returns the token pair. Refused: LoginFailed."""
        started = self._clock()
        response = await self._http.post(
            self._login_path, json={"username": username, "password": password}
        )
        if response.status_code != 200:
            raise LoginFailed.from_response("Login refused", response)
        pair = _token_pair(response)
        if pair is None:
            raise LoginFailed("Login answered 200 without a token pair", status=200)
        self._install(pair, started)
        return pair

    def set_tokens(self, access_token: str, refresh_token: str, *, expires_in: float) -> None:
        """Resume a session from tokens kept elsewhere (``expires_in``: seconds from now)."""
        pair = {"access_token": access_token, "refresh_token": refresh_token}
        self._install({**pair, "expires_in": expires_in}, self._clock())

    async def logout(self) -> httpx.Response:
        """``POST /logout`` (revokes the session on the server), then forget the tokens."""
        try:
            return await self.post(self._logout_path)
        finally:
            self._session = None

    async def request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """Send with the bearer token (``kwargs`` as for httpx); bodies must be re-sendable."""
        session = await self._usable_session()
        response = await self._send(method, url, session, kwargs)
        if response.status_code != 401 or _problem(response)[0] != "TOKEN_EXPIRED":
            return response
        session = await self._refreshed(session)
        return await self._send(method, url, session, kwargs)

    async def get(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kwargs)

    def _current(self) -> _Session:
        if self._session is not None:
            return self._session
        if self._ended is not None:
            ended = self._ended
            raise SessionEnded(
                str(ended), status=ended.status, code=ended.code, detail=ended.detail
            )
        raise NotLoggedIn("Not logged in: call login() first")

    async def _usable_session(self) -> _Session:
        session = self._current()
        if self._refresh_margin is None:
            return session
        margin = min(self._refresh_margin, session.lifetime / 10)
        if self._clock() < session.expires_at - margin:
            return session
        try:
            return await self._refreshed(session)
        except RefreshUnavailable:
            if self._clock() >= session.expires_at:
                raise
            return session  # still valid for a moment; a later request tries again

    async def _refreshed(self, stale: _Session) -> _Session:
        """The session that follows ``stale``: one refresh, however many callers ask at once."""
        current = self._current()
        if current.generation != stale.generation:
            return current  # refreshed (or logged in) since this caller's token was sent
        if self._refreshing is None or self._refreshing[0] != stale.generation:
            task = asyncio.get_running_loop().create_task(self._refresh(stale))
            task.add_done_callback(self._refresh_done)
            self._refreshing = (stale.generation, task)
        # Shielded: a caller that gives up does not cancel the refresh the others wait for.
        return await asyncio.shield(self._refreshing[1])

    def _refresh_done(self, task: asyncio.Task[_Session]) -> None:
        if self._refreshing is not None and self._refreshing[1] is task:
            self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter was cancelled

    async def _refresh(self, stale: _Session) -> _Session:
        started = self._clock()
        try:
            response = await self._http.post(
                self._refresh_path, headers={"Authorization": f"Bearer {stale.refresh_token}"}
            )
        except httpx.TransportError as exc:
            raise RefreshUnavailable(f"The refresh got no answer: {exc!r}") from exc
        if self._session is None or self._session.generation != stale.generation:
            return self._current()  # a login replaced the session meanwhile: it wins
        if response.status_code >= 500 or response.status_code in _TRANSIENT_STATUSES:
            raise RefreshUnavailable.from_response("The refresh failed", response)
        if response.status_code != 200:
            self._session = None
            self._ended = SessionEnded.from_response("The refresh token was refused", response)
            raise self._ended
        pair = _token_pair(response)
        if pair is None:
            raise RefreshUnavailable("The refresh answered 200 without a token pair", status=200)
        return self._install(pair, started)

    def _install(self, pair: Mapping[str, Any], started: float) -> _Session:
        self._generation += 1
        lifetime = float(pair["expires_in"])
        self._session = _Session(
            access_token=pair["access_token"],
            refresh_token=pair["refresh_token"],
            expires_at=started + lifetime,
            lifetime=lifetime,
            generation=self._generation,
        )
        self._ended = None
        return self._session

    async def _send(
        self, method: str, url: httpx.URL | str, session: _Session, kwargs: dict[str, Any]
    ) -> httpx.Response:
        headers = httpx.Headers(kwargs.get("headers"))
        headers["Authorization"] = f"Bearer {session.access_token}"
        return await self._http.request(method, url, **{**kwargs, "headers": headers})


def _problem(response: httpx.Response) -> tuple[str | None, str | None]:
    """``code`` and ``detail`` of a problem+json answer (None, None for anything else)."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code, detail = body.get("code"), body.get("detail")
    return (
        code if isinstance(code, str) else None,
        detail if isinstance(detail, str) else None,
    )


def _token_pair(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    tokens_ok = all(isinstance(body.get(name), str) for name in ("access_token", "refresh_token"))
    expiry = body.get("expires_in")
    expiry_ok = isinstance(expiry, int | float) and not isinstance(expiry, bool)
    return body if tokens_ok and expiry_ok else None
