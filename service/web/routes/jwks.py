"""The JSON Web Key Set: the public keys that verify this service's tokens."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import tag_blueprint, validate_response

from service.core.keys import jwks as key_set
from service.web.http import ModelResponse
from service.web.state import get_accounts

blueprint = Blueprint("keys", __name__)
tag_blueprint(blueprint, ["keys"])

# Long enough to spare the service, short enough that a rotated-in key is picked up soon.
JWKS_CACHE = {"Cache-Control": "public, max-age=300"}


class JWKSOut(BaseModel):
    keys: list[dict[str, Any]]


@blueprint.get("/.well-known/jwks.json")
@validate_response(JWKSOut, 200)
async def jwks() -> ModelResponse:
    """The public signing keys (RFC 7517), current first

    Each key's `kid` matches the `kid` header of the tokens it verifies; keys being rotated out are
    listed after the current one until their tokens expire. HMAC keys are secret and never listed:
    with an HS* algorithm the set is empty.
    """
    return JWKSOut.model_validate(key_set(get_accounts().tokens)), 200, JWKS_CACHE
