"""Refresh rotation with reuse detection, the retry grace window, and concurrent refreshes."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support import Client, SettingsFactory, bearer, running_app, signup_and_login


async def refresh(client: Client, refresh_token: str) -> Any:
    return await client.post("/refresh", headers=bearer(refresh_token))


async def test_refresh_rotates_along_a_chain_of_five(client: Client) -> None:
    pair = await signup_and_login(client)
    seen = {pair["refresh_token"]}

    for _ in range(5):
        response = await refresh(client, pair["refresh_token"])
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        pair = await response.get_json()
        assert pair["refresh_token"] not in seen
        seen.add(pair["refresh_token"])
        assert (await client.get("/me", headers=bearer(pair["access_token"]))).status_code == 200


async def test_refresh_accepts_the_token_in_a_json_body(client: Client) -> None:
    pair = await signup_and_login(client)

    response = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})

    assert response.status_code == 200


async def test_refresh_without_a_token_is_401(client: Client) -> None:
    response = await client.post("/refresh")

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "TOKEN_MISSING"


async def test_an_access_token_is_not_a_refresh_token(client: Client) -> None:
    pair = await signup_and_login(client)

    response = await refresh(client, pair["access_token"])

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "WRONG_TOKEN_TYPE"


async def test_refreshed_access_tokens_are_not_fresh(client: Client) -> None:
    import jwt

    pair = await signup_and_login(client)
    refreshed = await (await refresh(client, pair["refresh_token"])).get_json()

    assert jwt.decode(pair["access_token"], options={"verify_signature": False})["fresh"] is True
    claims = jwt.decode(refreshed["access_token"], options={"verify_signature": False})
    assert claims["fresh"] is False


async def test_reuse_after_the_grace_window_revokes_the_whole_family(
    settings_factory: SettingsFactory,
) -> None:
    async with running_app(settings_factory(refresh_reuse_grace_seconds=0)) as app:
        client = app.test_client()
        first = await signup_and_login(client)
        second = await (await refresh(client, first["refresh_token"])).get_json()
        third = await (await refresh(client, second["refresh_token"])).get_json()

        reuse = await refresh(client, first["refresh_token"])
        newest = await refresh(client, third["refresh_token"])
        access = await client.get("/me", headers=bearer(third["access_token"]))

    assert reuse.status_code == 401
    assert (await reuse.get_json())["code"] == "TOKEN_REUSED"
    assert newest.status_code == 401
    assert (await newest.get_json())["code"] == "TOKEN_REVOKED"
    assert access.status_code == 401
    assert (await access.get_json())["code"] == "TOKEN_REVOKED"


async def test_a_retry_inside_the_grace_window_gets_the_same_answer(client: Client) -> None:
    first = await signup_and_login(client)
    rotated = await (await refresh(client, first["refresh_token"])).get_json()

    retry = await refresh(client, first["refresh_token"])

    assert retry.status_code == 200
    retried = await retry.get_json()
    # The same live refresh token: no second branch of the family was created.
    assert retried["refresh_token"] == rotated["refresh_token"]
    onward = await refresh(client, rotated["refresh_token"])
    assert onward.status_code == 200


async def test_reuse_of_an_older_token_inside_the_window_is_still_reuse(client: Client) -> None:
    first = await signup_and_login(client)
    second = await (await refresh(client, first["refresh_token"])).get_json()
    await refresh(client, second["refresh_token"])

    # `first` was spent two rotations ago: not a retry of the latest rotation.
    response = await refresh(client, first["refresh_token"])

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "TOKEN_REUSED"


async def test_twenty_concurrent_refreshes_leave_one_live_branch(client: Client) -> None:
    pair = await signup_and_login(client)

    responses = await asyncio.gather(*(refresh(client, pair["refresh_token"]) for _ in range(20)))

    ok = [await r.get_json() for r in responses if r.status_code == 200]
    assert ok, "at least one refresh must win"
    assert len({body["refresh_token"] for body in ok}) == 1
    live = ok[0]["refresh_token"]
    assert (await refresh(client, live)).status_code == 200


async def test_concurrent_refreshes_without_grace_have_exactly_one_winner(
    settings_factory: SettingsFactory,
) -> None:
    async with running_app(settings_factory(refresh_reuse_grace_seconds=0)) as app:
        client = app.test_client()
        pair = await signup_and_login(client)

        responses = await asyncio.gather(
            *(refresh(client, pair["refresh_token"]) for _ in range(20))
        )
        winners = [await r.get_json() for r in responses if r.status_code == 200]
        codes = {(await r.get_json())["code"] for r in responses if r.status_code != 200}
        after = [await refresh(client, w["refresh_token"]) for w in winners]

    assert len(winners) <= 1
    assert codes <= {"TOKEN_REUSED", "TOKEN_REVOKED"}
    # Whatever won, reuse was detected, so no branch of the family stays alive.
    assert all(response.status_code == 401 for response in after)


async def test_the_family_has_an_absolute_lifetime(settings_factory: SettingsFactory) -> None:
    async with running_app(settings_factory(refresh_family_ttl=1)) as app:
        client = app.test_client()
        pair = await signup_and_login(client)
        await asyncio.sleep(1.1)  # the family's lifetime is wall-clock time in the database

        response = await refresh(client, pair["refresh_token"])

    assert response.status_code == 401
    assert (await response.get_json())["code"] in {"TOKEN_EXPIRED"}


async def test_token_endpoint_refresh_grant_detects_reuse_too(
    settings_factory: SettingsFactory,
) -> None:
    async with running_app(settings_factory(refresh_reuse_grace_seconds=0)) as app:
        client = app.test_client()
        pair = await signup_and_login(client)
        form = {"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
        first = await client.post("/token", form=form)
        again = await client.post("/token", form=form)

    assert first.status_code == 200
    assert again.status_code == 400
    body = await again.get_json()
    assert body["error"] == "invalid_grant"
    assert body["code"] == "TOKEN_REUSED"
