"""Concurrent writers: one winner per username, and no "database is locked" reaching a client."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support import PASSWORD, Client, SettingsFactory, running_app


async def signup(client: Client, username: str, email: str) -> Any:
    return await client.post(
        "/signup", json={"username": username, "email": email, "password": PASSWORD}
    )


# The hashing queue is opened wide here: these tests are about the database, not the pool.
WIDE_QUEUE = 1000


async def test_24_parallel_signups_of_one_username_give_one_201(
    settings_factory: SettingsFactory,
) -> None:
    async with running_app(settings_factory(hash_queue=WIDE_QUEUE)) as app:
        client = app.test_client()
        responses = await asyncio.gather(
            *(signup(client, "Racer" if i % 2 else "racer", f"r{i}@x.io") for i in range(24))
        )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * 23
    for response in responses:
        if response.status_code == 409:
            assert (await response.get_json())["code"] == "USER_EXISTS"


async def test_200_concurrent_writers_on_two_processes_never_see_a_locked_database(
    settings_factory: SettingsFactory,
) -> None:
    # Two apps on one database stand for two worker processes: separate pools and writers.
    settings = settings_factory(jwt_secret="k" * 48, hash_queue=WIDE_QUEUE)
    async with running_app(settings) as first, running_app(settings) as second:
        clients = [first.test_client(), second.test_client()]
        responses = await asyncio.gather(
            *(signup(clients[i % 2], f"writer{i}", f"w{i}@x.io") for i in range(200))
        )
        bodies = [await response.get_data(as_text=True) for response in responses]
        count = await clients[0].post(
            "/login", json={"username": "writer199", "password": PASSWORD}
        )

    assert [response.status_code for response in responses] == [201] * 200, bodies[:3]
    assert not any("locked" in body for body in bodies)
    assert count.status_code == 200
