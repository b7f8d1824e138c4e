"""A resource server: an app of its own that trusts the auth service's tokens without its
database (the README's "Resource servers").

Run it beside the service with the service's JWKS URL, and with the service's Redis to learn of
revocations on the very next request::

    AUTH_JWKS_URL=http://127.0.0.1:8000/.well-known/jwks.json \\
    AUTH_REDIS_URL=redis://127.0.0.1:6379/0 \\
    hypercorn --bind 127.0.0.1:8001 examples.resource_server.app:app

The service must sign with an asymmetric algorithm (``AUTH_JWT_ALGORITHM=ES256``, ``RS256`` or
``EdDSA``): HMAC keys are secret and never published in the JWKS.
"""

from __future__ import annotations

from quart import Quart

from service import (
    AuthExtension,
    Settings,
    current_claims,
    current_user,
    roles_required,
    scope_required,
    token_required,
)


def create_inventory_app(settings: Settings | None = None) -> Quart:
    app = Quart("inventory", static_folder=None)
    # With AUTH_JWKS_URL (or AUTH_INTROSPECTION_URL) set, the extension is in resource-server
    # mode: the same guards, no database.
    AuthExtension(app, settings=settings)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stock")
    @token_required
    async def stock() -> dict[str, object]:
        user = current_user()
        return {"user_id": str(user.id), "username": user.username, "items": ["lamp"]}

    @app.get("/stock/report")
    @roles_required("admin")
    async def report() -> dict[str, int]:
        return {"items": 1}

    @app.post("/stock/sync")
    @scope_required("inventory:write")
    async def sync() -> dict[str, object]:
        claims = current_claims()
        return {"synced_by": claims.client_id, "scopes": sorted(claims.scopes)}

    return app


app = create_inventory_app()
