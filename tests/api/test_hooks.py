"""The guards' awaitable hooks, fresh_required with a maximum age, and pruning of revocations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from quart import Quart
from sqlalchemy import func, select

from service.accounts.hooks import AuthHooks
from service.core.errors import InsufficientRole
from service.core.tokens import Claims, encode_token
from service.store.models import RevokedToken, User
from service.web.app import AuthExtension
from service.web.guards import current_user, fresh_required, roles_required, token_required
from service.web.state import get_state
from tests.support import (
    PASSWORD,
    Client,
    bearer,
    make_settings,
    running_app,
    signup_and_login,
)


async def test_every_hook_is_awaited(tmp_path: Path) -> None:
    calls: list[str] = []

    async def additional_claims(user: User) -> dict[str, Any]:
        calls.append("claims")
        return {"tenant": "acme", "sub": "forged"}

    async def user_loader(claims: Claims, user: User) -> User:
        calls.append(f"load:{claims.raw['tenant']}")
        return user

    async def revocation_check(claims: Claims) -> bool:
        calls.append("revocation")
        return claims.raw.get("tenant") == "revoked-tenant"

    hooks = AuthHooks(additional_claims, user_loader, revocation_check)
    async with running_app(make_settings(tmp_path), hooks) as app:
        client = app.test_client()
        pair = await signup_and_login(client)
        response = await client.get("/me", headers=bearer(pair["access_token"]))

    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["tenant"] == "acme"
    assert claims["sub"] != "forged"  # the service's own claims win
    assert response.status_code == 200
    assert calls == ["claims", "revocation", "load:acme"]


async def test_a_revocation_hook_can_refuse_a_token(tmp_path: Path) -> None:
    async def revoke_all(claims: Claims) -> bool:
        return True

    async with running_app(make_settings(tmp_path), AuthHooks(revocation_check=revoke_all)) as app:
        client = app.test_client()
        pair = await signup_and_login(client)
        response = await client.get("/me", headers=bearer(pair["access_token"]))

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "TOKEN_REVOKED"


async def test_a_user_loader_can_refuse_with_an_api_error(tmp_path: Path) -> None:
    async def only_admins(claims: Claims, user: User) -> User:
        if "admin" not in user.roles:
            raise InsufficientRole()
        return user

    async with running_app(make_settings(tmp_path), AuthHooks(user_loader=only_admins)) as app:
        client = app.test_client()
        pair = await signup_and_login(client)
        response = await client.get("/me", headers=bearer(pair["access_token"]))

    assert response.status_code == 403


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Quart]:
    app = Quart("shop", static_folder=None)
    AuthExtension(app, settings=make_settings(tmp_path))

    @app.post("/checkout")
    @fresh_required(max_age=60)
    async def checkout() -> dict[str, str]:
        return {"buyer": current_user().username}

    @app.get("/reports")
    @roles_required("admin", "auditor")
    async def reports() -> dict[str, str]:
        return {"reader": current_user().username}

    @app.get("/orders")
    @token_required
    async def orders() -> dict[str, str]:
        return {"owner": current_user().username}

    async with app.test_app():
        yield app


async def token_for(app: Quart, *, roles: list[str], issued_ago: int, fresh: bool) -> str:
    state = get_state(app)
    user = await state.accounts.register(
        username="buyer",
        email="b@x.io",
        password=PASSWORD,
        roles=roles,
    )
    issued = datetime.now(UTC).timestamp() - issued_ago
    return encode_token(
        state.accounts.tokens,
        subject=str(user.id),
        token_type="access",
        fresh=fresh,
        roles=roles,
        now=issued,
    ).token


@pytest.mark.parametrize(
    ("issued_ago", "fresh", "status"),
    [(0, True, 200), (120, True, 401), (0, False, 401)],
)
async def test_fresh_required_with_a_maximum_age(
    shop: Quart, issued_ago: int, fresh: bool, status: int
) -> None:
    token = await token_for(shop, roles=[], issued_ago=issued_ago, fresh=fresh)

    response = await shop.test_client().post("/checkout", headers=bearer(token))

    assert response.status_code == status
    if status == 401:
        assert (await response.get_json())["code"] == "FRESH_TOKEN_REQUIRED"


@pytest.mark.parametrize(("roles", "status"), [(["admin", "auditor"], 200), (["admin"], 403)])
async def test_roles_required_needs_every_role(shop: Quart, roles: list[str], status: int) -> None:
    token = await token_for(shop, roles=roles, issued_ago=0, fresh=False)

    response = await shop.test_client().get("/reports", headers=bearer(token))

    assert response.status_code == status
    if status == 403:
        assert (await response.get_json())["code"] == "INSUFFICIENT_ROLE"
        assert response.headers["WWW-Authenticate"] == (
            'Bearer realm="auth-service", error="insufficient_scope"'
        )


async def test_expired_revocations_are_pruned(app: Quart, client: Client) -> None:
    database = get_state(app).accounts.database
    async with database.session(write=True) as session:
        session.add(RevokedToken(jti="old", expires_at=datetime.now(UTC) - timedelta(hours=1)))
        session.add(RevokedToken(jti="live", expires_at=datetime.now(UTC) + timedelta(hours=1)))
        await session.commit()
    pair = await signup_and_login(client)

    await client.post("/logout", headers=bearer(pair["access_token"]))

    async with database.session(write=False) as session:
        jtis = set((await session.execute(select(RevokedToken.jti))).scalars())
        count = (await session.execute(select(func.count()).select_from(RevokedToken))).scalar()
    assert "old" not in jtis
    assert "live" in jtis
    assert count == 2  # "live" and the access token just logged out
