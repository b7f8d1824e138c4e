"""Faults: the database goes away or turns read-only -> 503 problems, then recovery, no loss."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from service.web.state import get_state
from tests.support import PASSWORD, bearer, make_settings, running_app, signup_and_login


async def test_an_unreachable_database_is_503_and_the_service_recovers(tmp_path: Path) -> None:
    home = tmp_path / "data"
    home.mkdir()
    async with running_app(make_settings(home)) as app:
        client = app.test_client()
        pair = await signup_and_login(client)
        database = get_state(app).accounts.database

        away = tmp_path / "moved"
        home.rename(away)  # the database disappears ...
        await database.reset()  # ... for every connection opened from now on
        ready = await client.get("/ready")
        me = await client.get("/me", headers=bearer(pair["access_token"]))
        signup = await client.post(
            "/signup", json={"username": "bob", "email": "b@x.io", "password": PASSWORD}
        )
        login = await client.post("/login", json={"username": "alice", "password": PASSWORD})

        away.rename(home)  # ... and comes back
        ready_again = await client.get("/ready")
        me_again = await client.get("/me", headers=bearer(pair["access_token"]))
        bob_again = await client.post(
            "/signup", json={"username": "bob", "email": "b@x.io", "password": PASSWORD}
        )

    for response in (ready, me, signup, login):
        assert response.status_code == 503, await response.get_data(as_text=True)
        assert response.content_type == "application/problem+json"
        body = await response.get_json()
        assert body["code"] == "SERVICE_UNAVAILABLE"
        assert "Traceback" not in str(body)
    assert signup.headers["Retry-After"] == "1"
    assert ready_again.status_code == 200
    assert me_again.status_code == 200
    assert bob_again.status_code == 201  # the signup during the outage left nothing behind


async def test_a_pool_with_no_free_connection_is_503_and_the_pool_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One reader connection, and a short wait for it: a login that finds it taken is refused
    # with a 503 (not a 500), and the pool is not thrown away, since the database is fine.
    settings = make_settings(tmp_path, db_pool_size=1, db_pool_timeout=0.2)
    async with running_app(settings) as app:
        client = app.test_client()
        await signup_and_login(client)
        database = get_state(app).accounts.database
        resets: list[Any] = []
        real_reset = database.reset

        async def counted_reset() -> None:
            resets.append(True)
            await real_reset()

        monkeypatch.setattr(database, "reset", counted_reset)
        held = asyncio.Event()
        release = asyncio.Event()

        async def hold_the_only_reader() -> None:
            async with database.session(write=False) as session:
                await session.execute(text("SELECT 1"))  # the connection is taken from here
                held.set()
                await release.wait()

        holder = asyncio.create_task(hold_the_only_reader())
        await held.wait()
        busy = await client.post("/login", json={"username": "alice", "password": PASSWORD})
        resets_by_then = len(resets)  # (shutdown disposes the pools: counted only until here)
        release.set()
        await holder
        free = await client.post("/login", json={"username": "alice", "password": PASSWORD})

    assert busy.status_code == 503, await busy.get_data(as_text=True)
    assert busy.content_type == "application/problem+json"
    assert (await busy.get_json())["code"] == "SERVICE_UNAVAILABLE"
    assert busy.headers["Retry-After"] == "1"
    assert resets_by_then == 0
    assert free.status_code == 200


def chattr(flag: str, *paths: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    existing = [str(path) for path in paths if path.exists()]
    result = subprocess.run(["chattr", flag, *existing], capture_output=True, check=False)
    return result.returncode == 0


async def test_a_read_only_database_file_is_503_and_nothing_is_lost(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path)) as app:
        client = app.test_client()
        pair = await signup_and_login(client)
        accounts = get_state(app).accounts
        # The mail sender (woken by the signup's verification mail) would otherwise open a
        # writer connection between the reset and the chattr, and an open connection keeps
        # writing to an immutable file: only the requests below may open connections.
        await accounts.mailer.close()
        database = accounts.database
        await database.reset()  # checkpoint and close: the next connections open the file anew
        files = [tmp_path / "auth.db", tmp_path / "auth.db-wal", tmp_path / "auth.db-shm"]
        if not chattr("+i", tmp_path / "auth.db"):
            pytest.skip("chattr +i is not supported on this filesystem")
        try:
            ready = await client.get("/ready")
            name = await client.patch(
                "/me", json={"name": "Lost?"}, headers=bearer(pair["access_token"])
            )
            signup = await client.post(
                "/signup", json={"username": "bob", "email": "b@x.io", "password": PASSWORD}
            )
        finally:
            chattr("-i", *files)
        ready_again = await client.get("/ready")
        me = await client.get("/me", headers=bearer(pair["access_token"]))
        renamed = await client.patch(
            "/me", json={"name": "Alice"}, headers=bearer(pair["access_token"])
        )

    assert ready.status_code == 503
    assert name.status_code == 503
    assert (await name.get_json())["code"] == "SERVICE_UNAVAILABLE"
    assert signup.status_code == 503
    assert ready_again.status_code == 200
    assert me.status_code == 200
    assert (await me.get_json())["name"] is None  # the refused write left nothing half-done
    assert renamed.status_code == 200
