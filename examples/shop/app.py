"""A tiny shop that guards its own routes with the auth service's extension (no auth routes)."""

from __future__ import annotations

from quart import Quart

from service import (
    AuthExtension,
    Settings,
    current_claims,
    current_user,
    fresh_required,
    roles_required,
    token_required,
)

ORDERS = {"alice": ["book", "lamp"]}


def create_shop_app(settings: Settings | None = None) -> Quart:
    app = Quart("shop", static_folder=None)
    AuthExtension(app, settings=settings)

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"shop": "open"}

    @app.get("/orders")
    @token_required
    async def orders() -> dict[str, object]:
        user = current_user()
        return {
            "owner": user.username,
            "orders": ORDERS.get(user.username, []),
            "tenant": current_claims().raw.get("tenant"),
        }

    @app.post("/checkout")
    @fresh_required(max_age=300)
    async def checkout() -> tuple[dict[str, str], int]:
        return {"status": "paid", "by": current_user().username}, 201

    @app.get("/reports")
    @roles_required("admin")
    async def reports() -> dict[str, int]:
        return {"orders": sum(len(items) for items in ORDERS.values())}

    return app
