"""What every HTTP request gets, done once at the ASGI level rather than in Quart hooks.

- counted while in progress (``InFlight``), so shutdown waits for it before closing the pools;
- with ``count_requests()`` (the service's own app), the request histogram
  (``http_request_duration_seconds``): from arrival to the answer's head, labelled by the URL
  rule the request matched (``ROUTE_KEY``, which ``RouteInScope`` writes into the scope as Quart
  matches it; ``<unmatched>`` when none did, the 431 below included);
- a request id: the client's ``X-Request-ID`` when it is a sane token, else a new one; bound
  for the audit log and echoed in the response;
- default response headers (the API's security headers), added where the app set none;
  ``https_only`` ones only when the request came over HTTPS (the scope's scheme is "https": TLS
  at the server, or a trusted proxy's forwarded scheme). The app adds ``Strict-Transport-Security``
  that way, or to every response when the settings say cookies are Secure (the service is then
  meant to be served over HTTPS whatever scheme reaches it, and browsers ignore HSTS received
  over plain HTTP, RFC 6797 §8.1);
- a bounded request head: the request target and the headers together over 16 KiB are a 431
  problem+json and the app is not called. Servers bound it themselves only partly (h11 measures
  a head only while it is incomplete, so one that arrives in a single read passes unmeasured);
  names and values are counted, not separators, so the bound is the same over HTTP/1.1 and h2;
- 204 and 304 answers without ``Content-Type``, ``Content-Length`` or body (RFC 9110 §6.4.1);
- with CORS on (``web/cors.py``, where quart-cors labels the app's answers): ``Vary: Origin``
  where the app set no ``Vary``, and the CORS headers on the 431, the one answer given without
  the app. ``install_cors`` wraps ``app.asgi_app`` in a ``CrossOriginASGIApp`` carrying them
  before the envelope is built, and the envelope unwraps it.

Quart's request hooks cost a dispatch each, and werkzeug's ``Headers.setdefault`` raises and
catches an exception for every header that is missing: on the hot path (a guarded GET) those
were a measurable share of the whole request. Here it is one wrapper around the ASGI app.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope
from quart.routing import QuartRule

from service.core.audit import bind_request
from service.core.errors import error_for_status, render_problem
from service.core.metrics import UNMATCHED_ROUTE, observe_request
from service.web.inflight import InFlight

REQUEST_ID_HEADER = b"x-request-id"
# The scope key under which the request's URL rule template is kept once Quart matched it.
ROUTE_KEY = "auth_service.route"
# Where an app installed with the extension keeps its envelope (``app.extensions``).
ENVELOPE_KEY = "auth_service.envelope"
_REQUEST_ID_RE = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")
MAX_HEAD_BYTES = 16 * 1024
BODILESS_STATUSES = frozenset({204, 304})
_REPRESENTATION_HEADERS = frozenset({b"content-type", b"content-length"})

ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


# The CORS headers of an answer the envelope gives itself, for the request's Origin (if any).
EarlyAnswerHeaders = Callable[[bytes | None], Headers]


class RouteInScope:
    """A request class mixin: the URL rule Quart matches is also written into the ASGI scope
    (``ROUTE_KEY``), where the envelope reads it for the request histogram."""

    scope: Any  # the request's ASGI scope (Quart's requests keep it)
    _url_rule: QuartRule | None = None

    @property
    def url_rule(self) -> QuartRule | None:
        return self._url_rule

    @url_rule.setter
    def url_rule(self, rule: QuartRule | None) -> None:
        # Set by Quart as it matches the request.
        self._url_rule = rule
        if rule is not None:
            keep_route(self.scope, rule)


def keep_route(scope: Scope, rule: QuartRule) -> None:
    cast(dict[str, object], scope)[ROUTE_KEY] = rule.rule


class CrossOriginASGIApp:
    """An ASGI app, the CORS headers of the answers an envelope gives without calling it, and
    default headers for every answer."""

    def __init__(
        self,
        app: ASGIApp,
        early_answer_headers: EarlyAnswerHeaders,
        default_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.app = app
        self.early_answer_headers = early_answer_headers
        self.default_headers = default_headers

    def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> Awaitable[None]:
        return self.app(scope, receive, send)


def _head_too_large_response(max_head_bytes: int) -> tuple[int, Headers, bytes]:
    error = error_for_status(431, "Request Header Fields Too Large")
    error.detail = f"The request target and headers together exceed {max_head_bytes} bytes."
    body, status, headers = render_problem(error)
    data = json.dumps(body).encode()
    encoded = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return status, [*encoded, (b"content-length", str(len(data)).encode())], data


class RequestEnvelope:
    def __init__(
        self, app: ASGIApp, inflight: InFlight, *, max_head_bytes: int = MAX_HEAD_BYTES
    ) -> None:
        self.inflight = inflight
        self.max_head_bytes = max_head_bytes
        self.default_headers: Headers = []
        self.https_headers: Headers = []  # the defaults plus the https_only ones
        self.head_too_large = _head_too_large_response(max_head_bytes)
        self.early_answer_headers: EarlyAnswerHeaders | None = None
        self.request_metrics = False
        if isinstance(app, CrossOriginASGIApp):
            # Its headers go on the 431 and its defaults on every answer; the wrapper itself is
            # left out of every request.
            self.early_answer_headers = app.early_answer_headers
            self.add_default_headers(app.default_headers)
            app = app.app
        self.app = app

    def add_default_headers(
        self, headers: Sequence[tuple[str, str]], *, https_only: bool = False
    ) -> None:
        """Headers every response carries unless the app set them itself (names are matched
        case-insensitively); ``https_only``: only responses to requests that came over HTTPS."""
        encoded = [(name.lower().encode(), value.encode()) for name, value in headers]
        if not https_only:
            self.default_headers.extend(encoded)
        self.https_headers.extend(encoded)

    def count_requests(self) -> None:
        """Observe every answer in the request histogram (core/metrics.py)."""
        self.request_metrics = True

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_metrics = self.request_metrics
        # One pass over the headers: the request id (the first one sent) and the head's size.
        raw_path = scope.get("raw_path")
        head_bytes = len(scope["query_string"]) + (
            len(raw_path) if raw_path is not None else len(scope["path"])
        )
        request_id: bytes | None = None
        for name, value in scope["headers"]:
            head_bytes += len(name) + len(value)
            if name == REQUEST_ID_HEADER and request_id is None:
                request_id = value
        if request_id is None or not _REQUEST_ID_RE.match(request_id):
            request_id = os.urandom(16).hex().encode()  # as uuid4().hex, without the UUID
        # The address as Quart's request.remote_addr gives it ("<local>" without a client).
        client = scope.get("client") or ("<local>",)
        bind_request(ip=client[0], request_id=request_id.decode())
        secure = scope.get("scheme") == "https"
        defaults = [
            (REQUEST_ID_HEADER, request_id),
            *(self.https_headers if secure else self.default_headers),
        ]
        bodiless = False

        async def send_with_headers(message: ASGISendEvent) -> None:
            nonlocal bodiless
            if message["type"] == "http.response.start":
                status = message["status"]
                if request_metrics:
                    route = cast(str, scope.get(ROUTE_KEY, UNMATCHED_ROUTE))
                    observe_request(route, scope["method"], status, started)
                headers = list(message.get("headers", ()))
                if status in BODILESS_STATUSES:
                    bodiless = True
                    headers = [
                        item for item in headers if item[0].lower() not in _REPRESENTATION_HEADERS
                    ]
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in defaults if item[0] not in present)
                message = cast(ASGISendEvent, {**message, "headers": headers})
            elif bodiless and message["type"] == "http.response.body" and message.get("body"):
                message = cast(ASGISendEvent, {**message, "body": b""})
            await send(message)

        self.inflight.started()
        try:
            if head_bytes > self.max_head_bytes:
                await self._refuse_head(scope["headers"], send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            self.inflight.finished()

    async def _refuse_head(
        self, request_headers: Iterable[tuple[bytes, bytes]], send: ASGISendCallable
    ) -> None:
        status, headers, body = self.head_too_large
        if self.early_answer_headers is not None:
            origin = next((value for name, value in request_headers if name == b"origin"), None)
            headers = [*headers, *self.early_answer_headers(origin)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
