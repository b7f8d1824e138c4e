"""Cross-origin browsers (CORS), for the origins ``AUTH_CORS_ORIGINS`` lists.

quart-cors labels the responses: it matches the ``Origin``, answers a preflight (``OPTIONS``
with ``Access-Control-Request-Method``) with the allowed methods, headers and max age, labels
every other response with the allowed origin, credentials and exposed headers, and adds
``Vary: Origin``. It runs as an ``after_request`` hook, so errors rendered by the app's handlers
(401, 404, 405, 413, 422, 429, 500, 503) are labelled like any answer. Where it falls short of
the contract, its hook is wrapped rather than replaced:

- a request without ``Origin`` (same-origin, or not a browser: nearly all of them) skips the
  library, which would rebuild its settings from ``app.config`` on every request; its
  ``Vary: Origin`` (the library's, and werkzeug's ``response.vary`` costs as much as building
  the response) is a default header of the envelope, added where the app set no ``Vary``;
- an accepted preflight answers 204 (Quart's automatic ``OPTIONS`` is 200 in a host app) and
  lists every allowed header, not only those the preflight asked for (the contract names them);
- the library's websocket hook is not installed: it refuses every handshake without an allowed
  ``Origin``, where the guards accept a bearer token from anywhere and check the cookie's
  ``Origin`` themselves (``web/origin.py``);
- the one answer given outside Quart, the envelope's 431 for an oversized head, is labelled by
  the envelope itself from ``early_answer_headers`` (``web/envelope.py``).

With ``AUTH_CORS_ORIGINS`` unset nothing is installed: no hook, no header, no cost.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import quart_cors
from quart import Blueprint, Quart, Response, request
from werkzeug.datastructures import HeaderSet

from service.core.config import Settings
from service.web.envelope import CrossOriginASGIApp, Headers

ALLOW_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
ALLOW_HEADERS = ("Authorization", "Content-Type", "X-CSRF-Token", "X-Request-ID")
EXPOSE_HEADERS = (
    "WWW-Authenticate",
    "Retry-After",
    "X-Request-ID",
    "Location",
    "Link",
    "X-Next-Cursor",
)
MAX_AGE_SECONDS = 600  # how long a browser may reuse a preflight's answer (Chromium caps 7200)
ANY_ORIGIN = "*"


def install_cors(app: Quart, settings: Settings) -> None:
    """Answer preflights and label responses for the listed origins (nothing when none are)."""
    origins = settings.cors_origin_list
    if not origins:
        return
    any_origin = origins == (ANY_ORIGIN,)
    # Browsers send the origin serialised in lower case; the library compares exactly.
    allowed = tuple(origin.lower() for origin in origins)
    # The library registers its hooks on the app or blueprint it is given: a blueprint that is
    # never registered holds them, so that only the response hook is installed, and wrapped.
    holder = quart_cors.cors(
        Blueprint("cors", __name__),
        allow_origin=allowed,
        # "*" means any origin without credentials (the library refuses the two together).
        allow_credentials=not any_origin,
        allow_methods=ALLOW_METHODS,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        max_age=MAX_AGE_SECONDS,
    )
    (library_hook,) = holder.after_request_funcs[None]
    all_allowed_headers = HeaderSet(ALLOW_HEADERS)

    async def label_cross_origin(response: Response) -> Response:
        if not _has_origin(request.scope["headers"]):
            return response  # the envelope adds its Vary: Origin
        labelled = library_hook(response)
        if inspect.isawaitable(labelled):
            labelled = await labelled
        assert isinstance(labelled, Response)
        # The library answers a preflight it accepts with Allow-Methods, and only such a one.
        if request.method == "OPTIONS" and "Access-Control-Allow-Methods" in labelled.headers:
            if labelled.status_code == 200:
                labelled.status_code = 204
            labelled.access_control_allow_headers = all_allowed_headers
        return labelled

    app.after_request(label_cross_origin)
    app.asgi_app = CrossOriginASGIApp(  # type: ignore[method-assign, assignment]
        app.asgi_app,
        _early_answer_headers(allowed, any_origin=any_origin),
        # Every answer depends on the Origin: where the library did not say so already.
        default_headers=[("Vary", "Origin")],
    )


def _has_origin(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    # The ASGI scope's names are lower case: a pass over them costs a quarter of a lookup that
    # misses in werkzeug's Headers (which raises and catches KeyError).
    return any(name == b"origin" for name, _ in headers)


def _early_answer_headers(
    allowed: tuple[str, ...], *, any_origin: bool
) -> Callable[[bytes | None], Headers]:
    """The labels of an answer the envelope gives without calling the app, for its ``Origin``:
    what the library gives an actual (not preflight) response (``Vary`` is a default)."""
    exposed = (b"access-control-expose-headers", ", ".join(EXPOSE_HEADERS).encode())
    if any_origin:
        wildcard: Headers = [(b"access-control-allow-origin", b"*"), exposed]
        return lambda origin: wildcard if origin else []
    listed = frozenset(origin.encode() for origin in allowed)

    def listed_origin_headers(origin: bytes | None) -> Headers:
        if origin not in listed:
            return []
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            exposed,
        ]

    return listed_origin_headers
