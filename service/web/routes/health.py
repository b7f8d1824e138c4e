"""Liveness and readiness."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag_blueprint, validate_response

from service.core.errors import ServiceUnavailable
from service.web.http import documents_errors
from service.web.schemas import HealthOut, ReadyOut
from service.web.state import get_accounts

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
    return ReadyOut(checks=await get_accounts().readiness())
