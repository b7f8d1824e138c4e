"""Passkeys (WebAuthn) for API clients and the pages' scripts: registration, the list, deletion,
and passwordless login with discoverable credentials. The use cases are in
``service/accounts/passkeys.py``."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag_blueprint

blueprint = Blueprint("passkeys", __name__)
tag_blueprint(blueprint, ["mfa"])
