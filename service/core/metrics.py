"""Prometheus metrics: what the use cases, the hasher and the requests count, and their text.

Counted from the audit events (``core/audit.py`` calls ``count_event`` for every line it
writes), so the use cases stay free of metrics calls; the password hasher times its jobs and
keeps its queue depth here; the request envelope (``web/envelope.py``) observes each answer of
the service's app as its head is sent. Label values are bounded: outcomes and events are the
code's own literals, routes are URL rule templates (``/sessions/<uuid:session_id>``,
``<unmatched>`` when nothing matched), methods one of a fixed set;
never a user name, an id or a raw path.

Across processes: ``python -m service.serve`` gives its workers a fresh private directory in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, chosen when the library is
imported): each worker writes its values into its own files there, and a scrape of any worker
adds up every worker's (``render``). Without the variable (plain hypercorn, the tests) the
values live in this process's memory.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format: every Prometheus reads it (all the names here are legacy-valid).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

UNMATCHED_ROUTE = "<unmatched>"
OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# In the manner of Keycloak's error names and Authelia's authn outcomes: the error code of the
# answer, lower-cased. A login outcome the code does not name here is counted as "other".
LOGIN_OUTCOMES = (
    "success",
    "invalid_credentials",
    "account_disabled",
    "email_not_verified",
    "throttled",
    "mfa_required",
    "service_unavailable",
    OTHER,
)
TOKEN_TYPES = ("access", "refresh", "client_credentials")
# (outcome, reason) of the "login" audit event -> the login outcome label.
_LOGIN_OUTCOME_OF: dict[tuple[str, str | None], str] = {
    ("ok", None): "success",
    ("failed", "unknown-user"): "invalid_credentials",
    ("failed", "wrong-password"): "invalid_credentials",
    ("failed", "disabled"): "account_disabled",
    ("refused", "email-not-verified"): "email_not_verified",
    ("throttled", None): "throttled",
    ("mfa-required", None): "mfa_required",
    # The hashing pool's queue was full (HashingBusy, 503): the password was never checked.
    ("busy", None): "service_unavailable",
}
# Successful events that issue tokens, and which.
_ISSUES: dict[str, tuple[str, ...]] = {
    "login": ("access", "refresh"),
    "refresh": ("access", "refresh"),
    "client-token": ("client_credentials",),
}

# Hashing: an argon2id verification takes tens to hundreds of milliseconds.
HASH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Requests: a guarded GET with a known token takes well under a millisecond.
REQUEST_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

LOGINS = Counter(
    "auth_logins_total",
    "Password logins by outcome (every way in: /login, /token, the pages).",
    ["outcome"],
)
TOKENS_ISSUED = Counter("auth_tokens_issued_total", "Tokens issued, by type.", ["type"])
REFRESH_REUSE = Counter(
    "auth_refresh_reuse_total", "Spent refresh tokens presented again (their session revoked)."
)
THROTTLED = Counter(
    "auth_throttled_total", "Attempts refused by the throttle (429), by audit event.", ["event"]
)
EVENTS = Counter("auth_events_total", "Audit events, by event and outcome.", ["event", "outcome"])
HASH_SECONDS = Histogram(
    "auth_password_hash_seconds",
    "Seconds a password hash or verification took in its hashing thread.",
    ["operation"],
    buckets=HASH_BUCKETS,
)
HASH_QUEUE_DEPTH = Gauge(
    "auth_hash_queue_depth",
    "Password hashing jobs running or waiting for a thread (summed over live processes).",
    multiprocess_mode="livesum",
)
REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Seconds from the request's arrival to its answer, by route template, method and status.",
    ["route", "method", "status"],
    buckets=REQUEST_BUCKETS,
)

for _outcome in LOGIN_OUTCOMES:
    LOGINS.labels(_outcome)
for _type in TOKEN_TYPES:
    TOKENS_ISSUED.labels(_type)
for _operation in ("hash", "verify"):
    HASH_SECONDS.labels(_operation)


# The counters each (event, outcome, reason) increments: labels() validates and locks on every
# call, so each combination (the code's own literals) is looked up once.
_EVENT_COUNTERS: dict[tuple[str, str, str | None], tuple[Any, ...]] = {}


def count_event(event: str, outcome: str, reason: object = None) -> None:
    """Count one audit event (``core/audit.py`` calls this for every event it writes)."""
    key = (event, outcome, reason if isinstance(reason, str) else None)
    counters = _EVENT_COUNTERS.get(key)
    if counters is None:
        counters = _EVENT_COUNTERS[key] = _counters_of(*key)
    for counter in counters:
        counter.inc()


def _counters_of(event: str, outcome: str, reason: str | None) -> tuple[Any, ...]:
    counters: list[Any] = [EVENTS.labels(event, outcome)]
    if outcome == "throttled":
        counters.append(THROTTLED.labels(event))
    if event == "login":
        detail = reason if outcome in ("failed", "refused") else None
        counters.append(LOGINS.labels(_LOGIN_OUTCOME_OF.get((outcome, detail), OTHER)))
    elif event == "refresh" and outcome == "reuse-detected":
        counters.append(REFRESH_REUSE)
    if outcome == "ok":
        counters.extend(TOKENS_ISSUED.labels(kind) for kind in _ISSUES.get(event, ()))
    return tuple(counters)


# One histogram child per (route, method, status): labels() validates and locks on every call.
_REQUEST_CHILDREN: dict[tuple[str, str, int], Any] = {}


def observe_request(route: str, method: str, status: int, started: float) -> None:
    """Observe a request whose answer is starting: seconds since ``started`` (perf_counter)."""
    if method not in METHODS:
        method = OTHER
    key = (route, method, status)
    child = _REQUEST_CHILDREN.get(key)
    if child is None:
        child = _REQUEST_CHILDREN[key] = REQUEST_SECONDS.labels(route, method, str(status))
    child.observe(time.perf_counter() - started)


def multiprocess_directory() -> str | None:
    return os.environ.get(MULTIPROCESS_DIRECTORY) or None


def render() -> bytes:
    """Every metric in the Prometheus text format: this process's, or, in multiprocess mode,
    the sum over every process that wrote into the directory."""
    directory = multiprocess_directory()
    if directory is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
