"""``GET /metrics`` (Prometheus text format); registering it times every request of the app.

Who may scrape: with ``AUTH_METRICS_TOKEN`` set, whoever sends it as ``Authorization: Bearer``
(compared in constant time; else 401); without it, only a client on the loopback interface
(127.0.0.0/8, ::1, or a Unix socket) whose request names no forwarding proxy, so a reverse proxy
on the same host does not open /metrics to everyone behind it. Anyone else gets the 404 of a
path that does not exist.

Registered by ``create_app``; an app that installs ``AuthExtension(mount_routes=True)`` keeps its
own ``/metrics`` (and its own rule for who reads it) unless it registers this blueprint too,
which also adds the request histogram to its requests (the extension's request envelope,
``web/envelope.py``, observes them). The auth counters are counted in any
case, in the process's default registry, which a host app's own exposition includes.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any, cast

from quart import Blueprint, Quart, Request, Response, request
from quart.blueprints import BlueprintSetupState
from quart_schema import security_scheme, tag_blueprint

from service.core.errors import NotFound, TokenInvalid, TokenMissing
from service.core.metrics import CONTENT_TYPE, render
from service.web.envelope import ENVELOPE_KEY, RequestEnvelope, RouteInScope, keep_route
from service.web.http import documents_errors, documents_text
from service.web.state import get_state

blueprint = Blueprint("metrics", __name__)
tag_blueprint(blueprint, ["operations"])

# Headers a proxy adds when it passes a request on: the peer's address is then the proxy's.
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


@blueprint.get("/metrics")
@security_scheme([{"metricsToken": []}, {}])
@documents_text(CONTENT_TYPE, "Every metric, in the Prometheus text exposition format 0.0.4.")
@documents_errors(TokenMissing, TokenInvalid, NotFound)
async def metrics() -> Response:
    """Prometheus metrics, summed over every worker of `python -m service.serve`

    With `AUTH_METRICS_TOKEN` set, send it as `Authorization: Bearer`; without it, only loopback
    clients (not through a proxy) are answered, and any other gets 404. Metrics:
    `auth_logins_total{outcome}`, `auth_tokens_issued_total{type}`, `auth_refresh_reuse_total`,
    `auth_throttled_total{event}`, `auth_events_total{event,outcome}`,
    `auth_password_hash_seconds{operation}`,
    `auth_hash_queue_depth` and `http_request_duration_seconds{route,method,status}` (`route`
    is the URL rule, `<unmatched>` when none matched).
    """
    secret = get_state().settings.metrics_token
    expected = secret.get_secret_value() if secret is not None else ""
    if expected:
        presented = _bearer(request.headers.get("Authorization", ""))
        if presented is None:
            raise TokenMissing("Send AUTH_METRICS_TOKEN as 'Authorization: Bearer <token>'.")
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            raise TokenInvalid("The metrics token is wrong.")
    elif not _from_loopback():
        raise NotFound()
    return Response(render(), content_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


@blueprint.record_once
def _count_requests(setup: BlueprintSetupState) -> None:
    """The app's request envelope (installed with the extension) observes every answer. An app
    with a request class of its own gets a hook that tells the envelope the route instead."""
    app = cast(Quart, setup.app)
    envelope = app.extensions.get(ENVELOPE_KEY)
    if isinstance(envelope, RequestEnvelope):
        envelope.count_requests()
        if not issubclass(app.request_class, RouteInScope):
            app.before_request(_keep_route)


async def _keep_route() -> None:
    current: Request = cast(Any, request)._get_current_object()
    if current.url_rule is not None:
        keep_route(current.scope, current.url_rule)


def _bearer(header: str) -> str | None:
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    return credentials if scheme.lower() == "bearer" and credentials else None


def _from_loopback() -> bool:
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    client = request.scope.get("client")
    if not client:
        return True  # a Unix socket (or an in-process client): no network peer at all
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
