"""The JSON Web Key Set: the public keys that verify this service's tokens."""

from __future__ import annotations

from quart import Blueprint

blueprint = Blueprint("keys", __name__)
