"""The shop's guarded routes, tested with the auth-service pytest plugin's fixtures only."""

from __future__ import annotations

from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from service.testing import AuthUser, BearerClientFactory, TokenMinter, UserMaker

# Every test is a coroutine: marked, so they run in pytest-asyncio's strict mode (its default)
# as well as in auto mode (this repository's).
pytestmark = pytest.mark.asyncio


async def problem(response: Any) -> tuple[int, str]:
    body = await response.get_json()
    return response.status_code, body["code"]


async def test_orders_answer_the_token_owner(authed_client: Client, auth_user: AuthUser) -> None:
    response = await authed_client.get("/orders")

    assert response.status_code == 200
    assert await response.get_json() == {"owner": auth_user.username, "orders": [], "tenant": None}


async def test_orders_list_the_owners_orders(
    make_user: UserMaker, mint_token: TokenMinter, bearer_client: BearerClientFactory
) -> None:
    alice = await make_user("alice")

    response = await bearer_client(await mint_token(alice)).get("/orders")

    assert (await response.get_json())["orders"] == ["book", "lamp"]


async def test_orders_without_a_token_are_refused(auth_client: Client) -> None:
    response = await auth_client.get("/orders")

    assert await problem(response) == (401, "TOKEN_MISSING")
    assert response.content_type == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="auth-service"'


async def test_the_shop_front_is_public(auth_client: Client) -> None:
    response = await auth_client.get("/")

    assert response.status_code == 200
    assert await response.get_json() == {"shop": "open"}


async def test_an_expired_token_is_refused(
    auth_user: AuthUser, mint_token: TokenMinter, bearer_client: BearerClientFactory
) -> None:
    client = bearer_client(await mint_token(auth_user, expired=True))

    assert await problem(await client.get("/orders")) == (401, "TOKEN_EXPIRED")


async def test_a_refresh_token_is_not_an_access_token(
    auth_user: AuthUser, mint_token: TokenMinter, bearer_client: BearerClientFactory
) -> None:
    client = bearer_client(await mint_token(auth_user, refresh=True))

    assert await problem(await client.get("/orders")) == (401, "WRONG_TOKEN_TYPE")


async def test_extra_claims_reach_the_route(
    auth_user: AuthUser, mint_token: TokenMinter, bearer_client: BearerClientFactory
) -> None:
    token = await mint_token(auth_user, extra_claims={"tenant": "acme"})

    response = await bearer_client(token).get("/orders")

    assert (await response.get_json())["tenant"] == "acme"


async def test_a_disabled_account_is_refused(
    make_user: UserMaker, mint_token: TokenMinter, bearer_client: BearerClientFactory
) -> None:
    gone = await make_user(disabled=True)

    response = await bearer_client(await mint_token(gone)).get("/orders")

    assert await problem(response) == (401, "ACCOUNT_DISABLED")


async def test_checkout_with_a_fresh_login(authed_client: Client, auth_user: AuthUser) -> None:
    response = await authed_client.post("/checkout")

    assert response.status_code == 201
    assert await response.get_json() == {"status": "paid", "by": auth_user.username}


async def test_checkout_refuses_a_refreshed_token(
    auth_user: AuthUser, mint_token: TokenMinter, bearer_client: BearerClientFactory
) -> None:
    client = bearer_client(await mint_token(auth_user, fresh=False))

    assert await problem(await client.post("/checkout")) == (401, "FRESH_TOKEN_REQUIRED")


async def test_checkout_refuses_a_login_older_than_five_minutes(
    auth_user: AuthUser, mint_token: TokenMinter, bearer_client: BearerClientFactory
) -> None:
    old = bearer_client(await mint_token(auth_user, age=301))
    recent = bearer_client(await mint_token(auth_user, age=290))

    assert await problem(await old.post("/checkout")) == (401, "FRESH_TOKEN_REQUIRED")
    assert (await recent.post("/checkout")).status_code == 201


async def test_reports_need_the_admin_role(
    make_user: UserMaker, mint_token: TokenMinter, bearer_client: BearerClientFactory
) -> None:
    admin = await make_user(roles=["admin"])
    clerk = await make_user(roles=["clerk"])

    allowed = await bearer_client(await mint_token(admin)).get("/reports")
    refused = await bearer_client(await mint_token(clerk)).get("/reports")

    assert allowed.status_code == 200
    assert await allowed.get_json() == {"orders": 2}
    assert await problem(refused) == (403, "INSUFFICIENT_ROLE")


async def test_a_token_without_a_session_still_opens_the_orders(
    auth_user: AuthUser, mint_token: TokenMinter, bearer_client: BearerClientFactory
) -> None:
    # Tokens minted outside a login (no `sid`) are checked for user, version and jti only.
    client = bearer_client(await mint_token(auth_user, session=False))

    assert (await client.get("/orders")).status_code == 200
