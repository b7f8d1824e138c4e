"""Failed logins are throttled per account+IP and per IP: 429 with Retry-After, never forever."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import pytest
from quart import Quart

from service.accounts import throttle
from service.accounts.throttle import PASSWORD_SCOPE, Throttle, ThrottleLimits
from service.core.errors import TooManyAttempts
from tests.support import PASSWORD, Client, SettingsFactory, running_app


@pytest.fixture
async def strict(settings_factory: SettingsFactory) -> AsyncIterator[Quart]:
    settings = settings_factory(
        throttle_account_limits="3/minute",
        throttle_ip_limits="6/minute",
        throttle_refresh_limits="4/minute",
    )
    async with running_app(settings) as app:
        await app.test_client().post(
            "/signup", json={"username": "alice", "email": "a@x.io", "password": PASSWORD}
        )
        await app.test_client().post(
            "/signup", json={"username": "bob", "email": "b@x.io", "password": PASSWORD}
        )
        yield app


async def wrong(client: Client, username: str = "alice", path: str = "/login") -> int:
    if path == "/token":
        response = await client.post(
            "/token", form={"grant_type": "password", "username": username, "password": "nope-nope"}
        )
    else:
        response = await client.post(path, json={"username": username, "password": "nope-nope"})
    return response.status_code


async def test_failures_per_account_are_limited_with_retry_after(strict: Quart) -> None:
    client = strict.test_client()
    assert [await wrong(client) for _ in range(3)] == [401, 401, 401]

    response = await client.post("/login", json={"username": "alice", "password": PASSWORD})

    assert response.status_code == 429
    assert response.content_type == "application/problem+json"
    assert (await response.get_json())["code"] == "TOO_MANY_ATTEMPTS"
    assert 1 <= int(response.headers["Retry-After"]) <= 60


async def test_all_password_endpoints_share_the_counters(strict: Quart) -> None:
    client = strict.test_client()
    await wrong(client, path="/login")
    await wrong(client, path="/token")
    await wrong(client, path="/session")

    token = await client.post(
        "/token", form={"grant_type": "password", "username": "alice", "password": PASSWORD}
    )
    session = await client.post("/session", json={"username": "alice", "password": PASSWORD})

    assert token.status_code == 429
    assert session.status_code == 429


async def test_other_accounts_are_not_locked_by_one(strict: Quart) -> None:
    client = strict.test_client()
    for _ in range(3):
        await wrong(client, "alice")

    response = await client.post("/login", json={"username": "bob", "password": PASSWORD})

    assert response.status_code == 200


async def test_one_address_is_limited_across_accounts(strict: Quart) -> None:
    client = strict.test_client()
    for name in ("u1", "u2", "u3", "u4", "u5", "u6"):
        await wrong(client, name)

    response = await client.post("/login", json={"username": "bob", "password": PASSWORD})

    assert response.status_code == 429


async def test_a_success_resets_the_account_counter(strict: Quart) -> None:
    client = strict.test_client()
    await wrong(client)
    await wrong(client)
    assert (
        await client.post("/login", json={"username": "alice", "password": PASSWORD})
    ).status_code == 200

    assert [await wrong(client) for _ in range(3)] == [401, 401, 401]


class ThrottleClock:
    """The throttle's reading of the time (``time.time()`` in service/accounts/throttle.py),
    moved only by the test: the attempts fall in one window however slow the machine."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


async def test_the_lockout_ends_when_the_window_does(
    settings_factory: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ThrottleClock()
    monkeypatch.setattr(throttle, "time", clock)
    settings = settings_factory(throttle_account_limits="2/second")
    async with running_app(settings) as app:
        client = app.test_client()
        await client.post(
            "/signup", json={"username": "alice", "email": "a@x.io", "password": PASSWORD}
        )
        await wrong(client)
        await wrong(client)
        locked = await client.post("/login", json={"username": "alice", "password": PASSWORD})
        clock.now += 1.1
        after = await client.post("/login", json={"username": "alice", "password": PASSWORD})

    assert locked.status_code == 429
    assert after.status_code == 200


async def test_failed_refreshes_are_limited_per_address(strict: Quart) -> None:
    client = strict.test_client()
    codes = [
        (await client.post("/refresh", headers={"Authorization": "Bearer x.y.z"})).status_code
        for _ in range(5)
    ]

    assert codes == [401, 401, 401, 401, 429]


async def test_throttling_can_be_turned_off(settings_factory: SettingsFactory) -> None:
    async with running_app(settings_factory(throttle_enabled=False)) as app:
        client = app.test_client()
        codes = {await wrong(client) for _ in range(40)}

    assert codes == {401}


async def test_auth_events_are_logged_as_json_without_secrets(
    strict: Quart, caplog: pytest.LogCaptureFixture
) -> None:
    client = strict.test_client()
    with caplog.at_level(logging.INFO, logger="service.audit"):
        await wrong(client)
        ok = await client.post("/login", json={"username": "alice", "password": PASSWORD})
        pair = await ok.get_json()
        await client.post("/refresh", headers={"Authorization": f"Bearer {pair['refresh_token']}"})
        await client.post("/logout", headers={"Authorization": f"Bearer {pair['access_token']}"})
        for _ in range(4):
            await wrong(client)

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "service.audit"]
    events = [(line["event"], line["outcome"]) for line in lines]
    assert ("login", "failed") in events
    assert ("login", "ok") in events
    assert ("refresh", "ok") in events
    assert ("logout", "ok") in events
    assert ("login", "throttled") in events
    for line in lines:
        assert {"ts", "event", "outcome", "user_id", "ip", "request_id"} <= set(line)
        assert line["ip"]  # the test client's address is "<local>"
        assert line["request_id"]
    text = caplog.text
    assert PASSWORD not in text
    assert pair["access_token"] not in text
    assert pair["refresh_token"] not in text
    assert "$argon2" not in text


async def test_the_username_and_the_email_of_one_account_share_its_counters(
    strict: Quart,
) -> None:
    client = strict.test_client()
    codes = [await wrong(client, login) for login in ("alice", "a@x.io", "ALICE")]

    response = await client.post("/login", json={"username": "a@x.io", "password": PASSWORD})

    assert codes == [401, 401, 401]
    assert response.status_code == 429


async def test_concurrent_guesses_get_only_the_places_left_checked(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory(throttle_account_limits="5/minute", throttle_ip_limits="100/minute")
    async with running_app(settings) as app:
        client = app.test_client()
        await client.post(
            "/signup", json={"username": "alice", "email": "a@x.io", "password": PASSWORD}
        )
        codes = await asyncio.gather(*(wrong(client) for _ in range(12)))

    assert sorted(codes) == [401] * 5 + [429] * 7


async def test_wrong_current_passwords_are_throttled_like_logins(strict: Quart) -> None:
    client = strict.test_client()
    login = await client.post("/login", json={"username": "alice", "password": PASSWORD})
    headers = {"Authorization": f"Bearer {(await login.get_json())['access_token']}"}

    async def change(current: str) -> int:
        response = await client.post(
            "/me/password",
            json={"current_password": current, "new_password": "a brand new passphrase"},
            headers=headers,
        )
        return response.status_code

    codes = [await change("not my password") for _ in range(4)]
    right_one_now = await change(PASSWORD)

    assert codes == [401, 401, 401, 429]
    assert right_one_now == 429


async def test_an_attempt_that_checked_nothing_gives_its_places_back() -> None:
    throttle = Throttle(ThrottleLimits.parse("2/minute", "3/minute", "3/minute"))
    first = await throttle.attempt(PASSWORD_SCOPE, account="alice", ip="10.0.0.1")
    await throttle.abandoned(first)
    await throttle.attempt(PASSWORD_SCOPE, account="alice", ip="10.0.0.1")
    await throttle.attempt(PASSWORD_SCOPE, account="alice", ip="10.0.0.1")

    with pytest.raises(TooManyAttempts) as refused:
        await throttle.attempt(PASSWORD_SCOPE, account="alice", ip="10.0.0.1")
    other_account = await throttle.attempt(PASSWORD_SCOPE, account="bob", ip="10.0.0.1")
    with pytest.raises(TooManyAttempts):  # the address's three places are taken now
        await throttle.attempt(PASSWORD_SCOPE, account="carol", ip="10.0.0.1")
    await throttle.succeeded(other_account)  # a success gives the address place back
    await throttle.attempt(PASSWORD_SCOPE, account="carol", ip="10.0.0.1")

    assert 1 <= int(refused.value.headers()["Retry-After"]) <= 60
