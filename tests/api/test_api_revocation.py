"""Logout, logout everywhere, sessions, password change, fresh tokens, roles, two processes."""

from __future__ import annotations

from typing import Any

import pytest
from quart import Quart

from service.web.state import get_state
from tests.support import (
    PASSWORD,
    Client,
    SettingsFactory,
    bearer,
    running_app,
    signup_and_login,
)

NEW_PASSWORD = "a different long passphrase"


async def code_of(response: Any) -> str:
    body: dict[str, Any] = await response.get_json()
    return str(body["code"])


async def test_logout_revokes_the_access_token_and_its_refresh_token(client: Client) -> None:
    pair = await signup_and_login(client)

    logout = await client.post("/logout", headers=bearer(pair["access_token"]))
    access = await client.get("/me", headers=bearer(pair["access_token"]))
    refresh = await client.post("/refresh", headers=bearer(pair["refresh_token"]))

    assert logout.status_code == 204
    assert access.status_code == 401
    assert await code_of(access) == "TOKEN_REVOKED"
    assert refresh.status_code == 401
    assert await code_of(refresh) == "TOKEN_REVOKED"


async def test_logout_leaves_other_sessions_alone(client: Client) -> None:
    phone = await signup_and_login(client)
    laptop = await signup_and_login(client)

    await client.post("/logout", headers=bearer(phone["access_token"]))

    assert (await client.get("/me", headers=bearer(laptop["access_token"]))).status_code == 200


async def test_logout_all_revokes_every_session(client: Client) -> None:
    phone = await signup_and_login(client)
    laptop = await signup_and_login(client)

    response = await client.post("/logout/all", headers=bearer(laptop["access_token"]))

    assert response.status_code == 204
    for pair in (phone, laptop):
        assert await code_of(await client.get("/me", headers=bearer(pair["access_token"]))) == (
            "TOKEN_REVOKED"
        )
        refreshed = await client.post("/refresh", headers=bearer(pair["refresh_token"]))
        assert await code_of(refreshed) == "TOKEN_REVOKED"
    again = await signup_and_login(client)
    assert (await client.get("/me", headers=bearer(again["access_token"]))).status_code == 200


async def test_sessions_list_and_revoke_one(client: Client) -> None:
    phone = await signup_and_login(client, **{"User-Agent": "phone/1.0"})
    laptop = await signup_and_login(client, **{"User-Agent": "laptop/2.0"})

    listed = await client.get("/sessions", headers=bearer(laptop["access_token"]))
    sessions = await listed.get_json()
    assert listed.status_code == 200
    assert {s["user_agent"] for s in sessions} == {"phone/1.0", "laptop/2.0"}
    assert [s["current"] for s in sessions if s["user_agent"] == "laptop/2.0"] == [True]
    phone_id = next(s["id"] for s in sessions if s["user_agent"] == "phone/1.0")
    assert set(sessions[0]) == {
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "user_agent",
        "ip",
        "current",
    }

    revoked = await client.delete(f"/sessions/{phone_id}", headers=bearer(laptop["access_token"]))
    again = await client.delete(f"/sessions/{phone_id}", headers=bearer(laptop["access_token"]))

    assert revoked.status_code == 204
    assert again.status_code == 404
    phone_refresh = await client.post("/refresh", headers=bearer(phone["refresh_token"]))
    assert await code_of(phone_refresh) == "TOKEN_REVOKED"
    remaining = await (
        await client.get("/sessions", headers=bearer(laptop["access_token"]))
    ).get_json()
    assert [s["user_agent"] for s in remaining] == ["laptop/2.0"]


async def test_someone_elses_session_is_404(client: Client) -> None:
    alice = await signup_and_login(client, "alice")
    bob = await signup_and_login(client, "bob")
    bobs = await (await client.get("/sessions", headers=bearer(bob["access_token"]))).get_json()

    response = await client.delete(
        f"/sessions/{bobs[0]['id']}", headers=bearer(alice["access_token"])
    )

    assert response.status_code == 404
    assert (await client.get("/me", headers=bearer(bob["access_token"]))).status_code == 200


async def test_password_change_kills_the_other_sessions_only(client: Client) -> None:
    other = await signup_and_login(client)
    this = await signup_and_login(client)

    response = await client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(this["access_token"]),
    )

    assert response.status_code == 204
    assert (await client.get("/me", headers=bearer(this["access_token"]))).status_code == 200
    assert await code_of(await client.get("/me", headers=bearer(other["access_token"]))) == (
        "TOKEN_REVOKED"
    )
    refreshed = await client.post("/refresh", headers=bearer(other["refresh_token"]))
    assert await code_of(refreshed) == "TOKEN_REVOKED"
    old = await client.post("/login", json={"username": "alice", "password": PASSWORD})
    new = await client.post("/login", json={"username": "alice", "password": NEW_PASSWORD})
    assert old.status_code == 401
    assert new.status_code == 200


async def test_password_change_with_a_wrong_current_password_is_refused(client: Client) -> None:
    pair = await signup_and_login(client)

    response = await client.post(
        "/me/password",
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
        headers=bearer(pair["access_token"]),
    )

    assert response.status_code == 401
    assert await code_of(response) == "INVALID_CREDENTIALS"


async def test_password_change_needs_a_fresh_token(client: Client) -> None:
    pair = await signup_and_login(client)
    refreshed = await (
        await client.post("/refresh", headers=bearer(pair["refresh_token"]))
    ).get_json()

    response = await client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(refreshed["access_token"]),
    )

    assert response.status_code == 401
    assert await code_of(response) == "FRESH_TOKEN_REQUIRED"


async def test_patch_me_changes_the_name_with_any_token_but_email_needs_fresh(
    client: Client,
) -> None:
    pair = await signup_and_login(client)
    refreshed = await (
        await client.post("/refresh", headers=bearer(pair["refresh_token"]))
    ).get_json()

    name = await client.patch(
        "/me", json={"name": "Alice A."}, headers=bearer(refreshed["access_token"])
    )
    stale_email = await client.patch(
        "/me", json={"email": "new@example.com"}, headers=bearer(refreshed["access_token"])
    )
    fresh_email = await client.patch(
        "/me", json={"email": "New@Example.com"}, headers=bearer(pair["access_token"])
    )

    assert name.status_code == 200
    assert (await name.get_json())["name"] == "Alice A."
    assert stale_email.status_code == 401
    assert await code_of(stale_email) == "FRESH_TOKEN_REQUIRED"
    assert fresh_email.status_code == 200
    body = await fresh_email.get_json()
    assert body["email"] == "new@example.com"
    assert body["name"] == "Alice A."


async def test_patch_me_to_a_taken_email_is_409(client: Client) -> None:
    await signup_and_login(client, "bob")
    pair = await signup_and_login(client, "alice")

    response = await client.patch(
        "/me", json={"email": "BOB@example.com"}, headers=bearer(pair["access_token"])
    )

    assert response.status_code == 409
    assert await code_of(response) == "USER_EXISTS"


async def make_admin(app: Quart, client: Client, username: str = "root") -> dict[str, Any]:
    await signup_and_login(client, username)
    await get_state(app).accounts.set_roles(username, ["admin"])
    return await signup_and_login(client, username)


async def test_admin_users_needs_the_admin_role(app: Quart, client: Client) -> None:
    pair = await signup_and_login(client)

    response = await client.get("/admin/users", headers=bearer(pair["access_token"]))

    assert response.status_code == 403
    assert await code_of(response) == "INSUFFICIENT_ROLE"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


async def test_admin_users_pages_through_everyone_once(app: Quart, client: Client) -> None:
    admin = await make_admin(app, client)
    for index in range(6):
        await signup_and_login(client, f"user{index}")

    seen: list[str] = []
    url = "/admin/users?limit=3"
    pages = 0
    while url:
        response = await client.get(url, headers=bearer(admin["access_token"]))
        assert response.status_code == 200
        seen += [user["username"] for user in await response.get_json()]
        link = response.headers.get("Link")
        url = link.split(";")[0].strip("<>") if link else ""
        pages += 1

    assert pages == 3
    assert sorted(seen) == sorted(["root"] + [f"user{i}" for i in range(6)])


@pytest.mark.parametrize("query", ["limit=0", "limit=500", "limit=x", "cursor=nope"])
async def test_admin_users_bad_query_is_422(app: Quart, client: Client, query: str) -> None:
    admin = await make_admin(app, client)

    response = await client.get(f"/admin/users?{query}", headers=bearer(admin["access_token"]))

    assert response.status_code == 422
    assert await code_of(response) == "VALIDATION_ERROR"
    name = query.split("=")[0]
    assert [e["loc"] for e in (await response.get_json())["errors"]] == [["query", name]]


async def test_removing_a_role_revokes_earlier_tokens(app: Quart, client: Client) -> None:
    admin = await make_admin(app, client)

    await get_state(app).accounts.set_roles("root", [])

    response = await client.get("/me", headers=bearer(admin["access_token"]))
    assert await code_of(response) == "TOKEN_REVOKED"
    refreshed = await client.post("/refresh", headers=bearer(admin["refresh_token"]))
    assert await code_of(refreshed) == "TOKEN_REVOKED"


async def test_adding_a_role_keeps_tokens_valid(app: Quart, client: Client) -> None:
    pair = await signup_and_login(client)

    await get_state(app).accounts.set_roles("alice", ["auditor"])

    assert (await client.get("/me", headers=bearer(pair["access_token"]))).status_code == 200


async def test_disabling_a_user_revokes_refresh_too(app: Quart, client: Client) -> None:
    pair = await signup_and_login(client)

    await get_state(app).accounts.set_active("alice", active=False)

    refreshed = await client.post("/refresh", headers=bearer(pair["refresh_token"]))
    assert refreshed.status_code == 401
    assert await code_of(refreshed) == "ACCOUNT_DISABLED"


async def test_a_logout_through_one_process_is_refused_by_another(
    settings_factory: SettingsFactory,
) -> None:
    # Two apps on one database, as two worker processes would be: no shared memory.
    settings = settings_factory(jwt_secret="s" * 48)
    async with running_app(settings) as first, running_app(settings) as second:
        one, two = first.test_client(), second.test_client()
        pair = await signup_and_login(one)
        assert (await two.get("/me", headers=bearer(pair["access_token"]))).status_code == 200

        await one.post("/logout", headers=bearer(pair["access_token"]))

        response = await two.get("/me", headers=bearer(pair["access_token"]))
        refreshed = await two.post("/refresh", headers=bearer(pair["refresh_token"]))

    assert response.status_code == 401
    assert await code_of(response) == "TOKEN_REVOKED"
    assert await code_of(refreshed) == "TOKEN_REVOKED"
