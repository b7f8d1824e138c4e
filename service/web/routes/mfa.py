"""The second factor for API clients: TOTP, recovery codes, and the login step that completes a
password login of a user who has one (``POST /login/mfa``). The use cases are in
``service/accounts/mfa.py``; passkeys have their own routes (``passkeys.py``)."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag_blueprint

blueprint = Blueprint("mfa", __name__)
tag_blueprint(blueprint, ["mfa"])
