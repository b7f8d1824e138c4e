"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from quart import Blueprint, current_app
from quart_schema import tag_blueprint, validate_response

from service.core.errors import ServiceUnavailable
from service.store.db import UNAVAILABLE_ERRORS
from service.store.epoch import RedisEpoch
from service.web.http import documents_errors
from service.web.schemas import HealthOut, ReadyOut
from service.web.state import get_state

blueprint = Blueprint("health", __name__)
tag_blueprint(blueprint, ["operations"])


@blueprint.get("/health")
@validate_response(HealthOut, 200)
async def health() -> HealthOut:
    """Liveness: the process answers; touches nothing"""
    return HealthOut()


@blueprint.get("/ready")
@validate_response(ReadyOut, 200)
@documents_errors(ServiceUnavailable)
async def ready() -> ReadyOut:
    """Readiness: the database (and Redis, when configured) answers"""
    database = get_state().database
    try:
        await database.ping()
    except UNAVAILABLE_ERRORS as exc:
        current_app.logger.warning("readiness check failed: %s", exc.__class__.__name__)
        raise ServiceUnavailable("The database is not reachable.") from None
    checks: dict[str, Literal["ok"]] = {"database": "ok"}
    if isinstance(database.epoch, RedisEpoch):
        await database.epoch.ping()  # RedisUnavailable: 503
        checks["redis"] = "ok"
    return ReadyOut(checks=checks)
