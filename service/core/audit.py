"""The audit log: one JSON line per authentication event, on the ``service.audit`` logger.

Lines carry the event, its outcome, the user id, the client IP and the request id (bound per
request by the app through a context variable, so the use cases log without knowing HTTP).
Passwords, hashes and tokens are never logged: fields with such names are dropped. Every event
is counted too (``core/metrics.py``: logins by outcome, tokens issued, refresh reuse, throttling).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from service.core.metrics import count_event

AUDIT_LOGGER = "service.audit"
logger = logging.getLogger(AUDIT_LOGGER)

_REQUEST: ContextVar[dict[str, str | None] | None] = ContextVar("audit_request", default=None)
SECRET_FIELDS = frozenset(
    {
        "password",
        "new_password",
        "current_password",
        "password_hash",
        "token",
        "access_token",
        "refresh_token",
        "secret",
        "csrf",
        "csrf_token",
    }
)


def bind_request(*, ip: str | None, request_id: str | None) -> None:
    _REQUEST.set({"ip": ip, "request_id": request_id})


def current_request_id() -> str | None:
    """The id of the request being handled (bound by the app's request envelope)."""
    bound = _REQUEST.get()
    return bound["request_id"] if bound else None


def audit(event: str, *, outcome: str = "ok", user_id: object = None, **fields: object) -> None:
    count_event(event, outcome, fields.get("reason"))
    record: dict[str, Any] = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "event": event,
        "outcome": outcome,
        "user_id": str(user_id) if user_id is not None else None,
        **(_REQUEST.get() or {"ip": None, "request_id": None}),
    }
    record.update({k: v for k, v in fields.items() if k not in SECRET_FIELDS})
    # ensure_ascii: every character outside printable ASCII (controls, DEL, C1, U+2028/U+2029)
    # is a \uNNNN escape, so the line stays one line of valid JSON that the log's own escaping
    # (service/core/logs.py) leaves alone.
    logger.info(json.dumps(record, default=str, sort_keys=True, ensure_ascii=True))


def configure_audit_logging() -> None:
    """A stdout handler printing the bare JSON line, unless one is configured already."""
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
