"""What every HTTP request gets, done once at the ASGI level rather than in Quart hooks.

- counted while in progress (``InFlight``), so shutdown waits for it before closing the pools;
- a request id: the client's ``X-Request-ID`` when it is a sane token, else a new one; bound
  for the audit log and echoed in the response;
- default response headers (the API's security headers), added where the app set none.

Quart's request hooks cost a dispatch each, and werkzeug's ``Headers.setdefault`` raises and
catches an exception for every header that is missing: on the hot path (a guarded GET) those
were a measurable share of the whole request. Here it is one wrapper around the ASGI app.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope

from .audit import bind_request
from .inflight import InFlight

REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID_RE = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")

ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


class RequestEnvelope:
    def __init__(self, app: ASGIApp, inflight: InFlight) -> None:
        self.app = app
        self.inflight = inflight
        self.default_headers: list[tuple[bytes, bytes]] = []

    def add_default_headers(self, headers: Sequence[tuple[str, str]]) -> None:
        """Headers every response carries unless the app set them itself (names are matched
        case-insensitively)."""
        encoded = [(name.lower().encode(), value.encode()) for name, value in headers]
        self.default_headers.extend(encoded)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = b""
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                if _REQUEST_ID_RE.match(value):
                    request_id = value
                break
        if not request_id:
            request_id = os.urandom(16).hex().encode()  # as uuid4().hex, without the UUID
        # The address as Quart's request.remote_addr gives it ("<local>" without a client).
        client = scope.get("client") or ("<local>",)
        bind_request(ip=client[0], request_id=request_id.decode())
        defaults = [(REQUEST_ID_HEADER, request_id), *self.default_headers]

        async def send_with_headers(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in defaults if item[0] not in present)
                message = cast(ASGISendEvent, {**message, "headers": headers})
            await send(message)

        self.inflight.started()
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self.inflight.finished()
