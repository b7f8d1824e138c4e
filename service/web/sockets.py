"""The guards on ``websocket`` routes: checked at the handshake, and again while the socket is
open.

- At the handshake, the token is read and verified as on any request (``Authorization: Bearer``,
  or the access cookie, whose ``Origin`` must then be this site or an allowed one: a page of
  another site cannot open a socket on the user's cookie, cross-site WebSocket hijacking). A
  refused token raises before the socket is accepted, so Quart answers the handshake with the
  problem (401/403) instead of opening it.
- While it is open, the token is checked again on every message, in either direction, and by a
  watch every ``AUTH_WEBSOCKET_RECHECK_SECONDS`` (at most 30) when no message passes: a logout,
  a logout-everywhere, a password change, a disabled user or a deleted client (or the token's
  expiry) closes the socket with 1008 (policy violation). The check is the guarded request's
  own (``Authority.user_for`` / ``client_for``): a memory read and the change epoch, no
  database round trip while nothing changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from quart import websocket

from service.core.errors import APIError
from service.core.tokens import check_times
from service.web.state import get_state

if TYPE_CHECKING:
    from quart.wrappers import Websocket

    from service.accounts.authority import Authority
    from service.web.guards import AuthContext

R = TypeVar("R")
POLICY_VIOLATION = 1008


async def guard_socket(
    run: Callable[[], Awaitable[R]],
    *,
    authenticate: Callable[[], Awaitable[AuthContext]],
    check: Callable[[AuthContext], None] | None,
    remember: Callable[[AuthContext], None],
) -> R:
    """Authenticate the handshake (a refusal raises before the socket opens), then run the
    view with the socket watched."""
    context = await authenticate()
    if check is not None:
        check(context)
    remember(context)
    state = get_state()
    watch = SocketWatch(
        websocket._get_current_object(),  # type: ignore[attr-defined]
        context,
        state.authority,
        interval=state.settings.websocket_recheck_seconds,
        leeway=state.settings.jwt_leeway,
    )
    watch.start()
    try:
        return await run()
    finally:
        await watch.stop()


class SocketWatch:
    """Checks one socket's token on each message and every ``interval`` seconds; closes the
    socket with 1008 once the token is refused."""

    def __init__(
        self,
        socket: Websocket,
        context: AuthContext,
        authority: Authority,
        *,
        interval: float,
        leeway: int,
    ) -> None:
        self.socket = socket
        self.context = context
        self.authority = authority
        self.interval = interval
        self.leeway = leeway
        self.closed = False
        self._watching: asyncio.Task[None] | None = None

    def start(self) -> None:
        receive, send = self.socket._receive, self.socket._send

        async def checked_receive() -> Any:
            data = await receive()
            await self.still_valid()
            return data

        async def checked_send(data: Any) -> None:
            await self.still_valid()
            await send(data)

        self.socket._receive = checked_receive
        self.socket._send = checked_send
        self._watching = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching

    async def still_valid(self) -> None:
        """The token is still good; else the socket is closed (1008) and the refusal raised."""
        claims = self.context.claims
        try:
            check_times(claims.raw, time.time(), self.leeway)
            if self.context.user is None:
                await self.authority.client_for(claims)
            else:
                await self.authority.user_for(claims)
        except APIError as refusal:
            await self.close(refusal)
            raise

    async def close(self, refusal: APIError) -> None:
        if self.closed:
            return
        self.closed = True
        await self.socket.close(POLICY_VIOLATION, refusal.code.value)

    async def _watch(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.interval)
            with contextlib.suppress(APIError):
                await self.still_valid()
