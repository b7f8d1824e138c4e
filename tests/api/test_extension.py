"""token_required on the routes of another Quart app that installs the auth extension."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart

from service.accounts import ClientInfo
from service.web.app import AuthExtension
from service.web.guards import current_claims, current_user, scope_required, token_required
from service.web.state import get_state
from tests.support import PASSWORD, bearer, client_token, make_settings


@pytest.fixture
async def other_app(tmp_path: Path) -> AsyncIterator[Quart]:
    app = Quart("shop", static_folder=None)
    AuthExtension(app, settings=make_settings(tmp_path))

    @app.get("/orders")
    @token_required
    async def orders() -> dict[str, str]:
        return {"owner": current_user().username}

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {"owner": current_user().username}

    async with app.test_app():
        yield app


async def test_token_required_guards_another_apps_route(other_app: Quart) -> None:
    accounts = get_state(other_app).accounts
    user = await accounts.register(username="shopper", email="s@x.io", password=PASSWORD)
    pair = await accounts.start_session(user, client=ClientInfo())
    token = pair.access_token
    client = other_app.test_client()

    allowed = await client.get("/orders", headers={"Authorization": f"Bearer {token}"})
    refused = await client.get("/orders")

    assert allowed.status_code == 200
    assert await allowed.get_json() == {"owner": "shopper"}
    assert refused.status_code == 401
    assert refused.content_type == "application/problem+json"
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="auth-service"'


async def test_current_user_without_the_decorator_raises(other_app: Quart) -> None:
    async with other_app.test_request_context("/open"):
        with pytest.raises(RuntimeError, match="token_required"):
            current_user()


async def test_the_extension_mounts_no_routes_unless_asked(other_app: Quart) -> None:
    endpoints = {rule.endpoint for rule in other_app.url_map.iter_rules()}

    assert endpoints == {"orders", "open_route"}


async def test_get_state_without_the_extension_says_so() -> None:
    with pytest.raises(RuntimeError, match="AuthExtension"):
        get_state(Quart("bare"))


async def test_the_extension_gives_every_answer_a_request_id(other_app: Quart) -> None:
    client = other_app.test_client()
    refused = await client.get("/orders", headers={"X-Request-ID": "order-42"})
    fresh = await client.get("/orders")

    assert refused.status_code == 401
    assert refused.headers["X-Request-ID"] == "order-42"
    assert len(fresh.headers["X-Request-ID"]) == 32
    # The API's own security headers are the service's choice, not imposed on a host app.
    assert "Content-Security-Policy" not in refused.headers


def test_the_public_api_is_what_the_package_exports() -> None:
    import service
    from service.web import app, guards

    assert service.AuthExtension is app.AuthExtension
    assert service.token_required is guards.token_required
    for name in service.__all__:
        assert getattr(service, name) is not None
    with pytest.raises(AttributeError):
        _ = service.not_a_name


async def test_mounted_routes_work_on_an_app_without_quart_schema(tmp_path: Path) -> None:
    app = Quart("plain", static_folder=None)
    AuthExtension(app, settings=make_settings(tmp_path), mount_routes=True)
    body = {"username": "bob", "email": "bob@example.com", "password": PASSWORD}

    async with app.test_app():
        client = app.test_client()
        signup = await client.post("/signup", json=body)
        login = await client.post("/login", json={"username": "bob", "password": PASSWORD})
        me = await client.get(
            "/me", headers={"Authorization": f"Bearer {(await login.get_json())['access_token']}"}
        )
        document = await client.get("/openapi.json")

    assert signup.status_code == 201
    assert (await signup.get_json())["username"] == "bob"
    assert login.status_code == 200
    assert (await me.get_json())["email"] == "bob@example.com"
    assert document.status_code == 404  # the host published no document; none is added


async def test_scope_required_guards_a_machine_route_with_the_services_database(
    tmp_path: Path,
) -> None:
    """Not a resource server: the extension on the service's own database, the client made and
    deleted there; its token passes scope_required, and is refused at once once deleted."""
    app = Quart("reports", static_folder=None)
    AuthExtension(app, settings=make_settings(tmp_path), mount_routes=True)

    @app.get("/reports")
    @scope_required("reports:read")
    async def reports() -> dict[str, object]:
        claims = current_claims()
        return {"client_id": claims.client_id, "scopes": sorted(claims.scopes)}

    async with app.test_app():
        accounts = get_state(app).accounts
        reader = await accounts.clients.create("reader", ["reports:read"])
        writer = await accounts.clients.create("writer", ["reports:write"])
        user = await accounts.register(username="clerk", email="c@x.io", password=PASSWORD)
        user_token = (await accounts.start_session(user, client=ClientInfo())).access_token
        client = app.test_client()

        reader_token = (await client_token(client, reader))["access_token"]
        allowed = await client.get("/reports", headers=bearer(reader_token))
        no_scope = await client.get(
            "/reports", headers=bearer((await client_token(client, writer))["access_token"])
        )
        a_user = await client.get("/reports", headers=bearer(user_token))
        anonymous = await client.get("/reports")
        await accounts.clients.delete("reader")
        deleted = await client.get("/reports", headers=bearer(reader_token))

    assert allowed.status_code == 200
    assert await allowed.get_json() == {
        "client_id": reader.client.client_id,
        "scopes": ["reports:read"],
    }
    for refused in (no_scope, a_user):
        assert refused.status_code == 403
        assert (await refused.get_json())["code"] == "INSUFFICIENT_SCOPE"
        assert refused.headers["WWW-Authenticate"] == (
            'Bearer realm="auth-service", error="insufficient_scope", scope="reports:read"'
        )
    assert anonymous.status_code == 401
    assert (await anonymous.get_json())["code"] == "TOKEN_MISSING"
    assert deleted.status_code == 401
    assert (await deleted.get_json())["code"] == "TOKEN_REVOKED"
