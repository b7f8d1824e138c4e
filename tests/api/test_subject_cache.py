"""No database round trip for a known token, while every change is seen on the next request."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from quart import Quart
from sqlalchemy import event

from service.web.state import get_state
from tests.support import Client, SettingsFactory, bearer, running_app, signup_and_login

COUNTING: contextvars.ContextVar[bool] = contextvars.ContextVar("counting", default=False)


@contextmanager
def counting_queries(app: Quart) -> Iterator[list[str]]:
    """The statements the requests made inside the block run (the test's own context, which
    Quart's test client and SQLAlchemy's greenlets carry along); not those of tasks started
    before it, such as the mail sender delivering the signup's verification mail."""
    database = get_state(app).accounts.database
    statements: list[str] = []
    token = COUNTING.set(True)

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if COUNTING.get():
            statements.append(statement)

    engines = {database.reader.sync_engine, database.writer.sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        COUNTING.reset(token)
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


async def test_a_known_token_needs_no_database_round_trip(app: Quart, client: Client) -> None:
    pair = await signup_and_login(client)
    await client.get("/protected", headers=bearer(pair["access_token"]))

    with counting_queries(app) as statements:
        for _ in range(5):
            response = await client.get("/protected", headers=bearer(pair["access_token"]))
            assert response.status_code == 200

    assert statements == []


async def test_a_profile_change_is_seen_on_the_next_request(client: Client) -> None:
    pair = await signup_and_login(client)
    await client.get("/me", headers=bearer(pair["access_token"]))

    await client.patch("/me", json={"name": "New Name"}, headers=bearer(pair["access_token"]))
    response = await client.get("/me", headers=bearer(pair["access_token"]))

    assert (await response.get_json())["name"] == "New Name"


async def test_a_change_made_by_another_process_is_seen_at_once(
    settings_factory: SettingsFactory,
) -> None:
    # The CLI (another process) disables the user: the server's cache must not hide it.
    settings = settings_factory(jwt_secret="c" * 48)
    async with running_app(settings) as server, running_app(settings) as cli:
        client = server.test_client()
        pair = await signup_and_login(client)
        assert (await client.get("/me", headers=bearer(pair["access_token"]))).status_code == 200

        await get_state(cli).accounts.set_active("alice", active=False)

        response = await client.get("/me", headers=bearer(pair["access_token"]))
    assert response.status_code == 401
    assert (await response.get_json())["code"] == "ACCOUNT_DISABLED"


async def test_a_burst_with_a_new_token_loads_it_once(app: Quart, client: Client) -> None:
    pair = await signup_and_login(client)

    with counting_queries(app) as statements:
        responses = await asyncio.gather(
            *(client.get("/protected", headers=bearer(pair["access_token"])) for _ in range(50))
        )

    assert [response.status_code for response in responses] == [200] * 50
    selects = [statement for statement in statements if statement.lstrip().startswith("SELECT")]
    assert len(selects) == 1  # one load, shared by the 49 requests that came meanwhile


async def test_a_refused_token_is_refused_for_every_waiter(app: Quart, client: Client) -> None:
    pair = await signup_and_login(client)
    await get_state(app).accounts.set_active("alice", active=False)

    responses = await asyncio.gather(
        *(client.get("/protected", headers=bearer(pair["access_token"])) for _ in range(20))
    )

    assert {response.status_code for response in responses} == {401}
