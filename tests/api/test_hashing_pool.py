"""The hashing pool admits a job unless its expected wait (measured durations) is over the
bound: beyond it, 503 with Retry-After, never an endless backlog; a taken name costs no hash;
its threads run at a lower CPU priority than the request handling."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import pytest

from service.core.passwords import PasswordHasher
from service.web.state import get_state
from tests.hashing import hold_hashing, start_signup, until_pending, watched
from tests.support import PASSWORD, SettingsFactory, make_settings, running_app


async def test_a_hashing_queue_at_its_count_cap_answers_503_and_recovers(
    settings_factory: SettingsFactory,
) -> None:
    async with running_app(settings_factory(hash_workers=1, hash_queue=2)) as app:
        hasher = get_state(app).accounts.hasher
        release = hold_hashing(hasher)
        client = app.test_client()

        waiting = [start_signup(client, i) for i in range(2)]
        await until_pending(hasher, 2)
        refused = await start_signup(client, 9)
        release.set()
        accepted = await asyncio.gather(*waiting)
        later = await start_signup(client, 10)

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert (await refused.get_json())["code"] == "SERVICE_UNAVAILABLE"
    assert [response.status_code for response in accepted] == [201, 201]
    assert later.status_code == 201


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="niceness is per thread on Linux only")
@pytest.mark.parametrize("nice", [0, 7])
async def test_hashing_threads_run_nicer_than_the_request_handling_thread(
    tmp_path: Path, nice: int
) -> None:
    hasher = PasswordHasher(make_settings(tmp_path, hash_workers=2, hash_nice=nice))
    seen: set[int] = set()
    hasher.context = watched(hasher, lambda: seen.add(_niceness()))
    try:
        await asyncio.gather(*(hasher.hash(PASSWORD) for _ in range(4)))
    finally:
        hasher.close()

    assert seen == {min(19, _niceness() + nice)}
    assert _niceness() == os.getpriority(os.PRIO_PROCESS, os.getpid())  # this thread untouched


async def test_the_pool_sheds_only_when_the_expected_wait_exceeds_the_bound(
    settings_factory: SettingsFactory,
) -> None:
    async with running_app(settings_factory(hash_workers=1, hash_max_wait=1.0)) as app:
        hasher = get_state(app).accounts.hasher
        hasher.average_seconds = 0.4  # as measured: each job ahead adds 0.4 s of waiting
        release = hold_hashing(hasher)
        client = app.test_client()

        # Waits of 0, 0.4 and 0.8 s are within the bound; the fourth job would wait 1.2 s.
        waiting = [start_signup(client, i) for i in range(3)]
        await until_pending(hasher, 3)
        refused = await start_signup(client, 9)
        release.set()
        accepted = await asyncio.gather(*waiting)

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert [response.status_code for response in accepted] == [201, 201, 201]


async def test_concurrent_signups_of_one_new_name_are_one_201_and_the_rest_409(
    settings_factory: SettingsFactory,
) -> None:
    async with running_app(settings_factory()) as app:  # the default admission
        client = app.test_client()
        body = {"username": "popular", "email": "popular@example.com", "password": PASSWORD}
        answers = await asyncio.gather(*(client.post("/signup", json=body) for _ in range(24)))

    codes = sorted(answer.status_code for answer in answers)
    assert codes == [201] + [409] * 23


@pytest.mark.parametrize(
    "taken",
    [
        {"username": "ALICE", "email": "new@example.com"},
        {"username": "newname", "email": "Alice@Example.com"},
    ],
)
async def test_a_signup_of_a_taken_name_is_409_without_hashing(
    settings_factory: SettingsFactory, taken: dict[str, str]
) -> None:
    async with running_app(settings_factory()) as app:
        client = app.test_client()
        first = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
        assert (await client.post("/signup", json=first)).status_code == 201
        hasher = get_state(app).accounts.hasher

        def no_hashing() -> None:
            raise AssertionError("a taken name was hashed")

        hasher.context = watched(hasher, no_hashing)
        response = await client.post("/signup", json={**taken, "password": PASSWORD})

    assert response.status_code == 409
    field = "username" if taken["username"] == "ALICE" else "email"
    assert (await response.get_json())["detail"] == {
        "username": "This username is taken.",
        "email": "This email is already registered.",
    }[field]
