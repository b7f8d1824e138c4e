"""The hashing pool's queue is bounded: beyond it, 503 with Retry-After, never a backlog; its
threads run at a lower CPU priority than the request handling."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from service.passwords import PasswordHasher
from service.state import get_state
from tests.support import PASSWORD, SettingsFactory, make_settings, running_app


async def test_a_full_hashing_queue_answers_503_and_recovers(
    settings_factory: SettingsFactory,
) -> None:
    async with running_app(settings_factory(hash_workers=1, hash_queue=2)) as app:
        hasher = get_state(app).hasher
        release = threading.Event()
        original = hasher._hash

        def slow_hash(password: str) -> str:
            release.wait(timeout=30)
            return original(password)

        hasher._hash = slow_hash  # type: ignore[method-assign]
        client = app.test_client()

        def signup(index: int) -> Any:
            body = {"username": f"user{index}", "email": f"u{index}@x.io", "password": PASSWORD}
            return asyncio.create_task(client.post("/signup", json=body))

        waiting = [signup(i) for i in range(2)]
        for _ in range(1000):  # until both jobs hold their places in the pool
            if hasher.pending >= 2:
                break
            await asyncio.sleep(0.01)
        refused = await signup(9)
        release.set()
        accepted = await asyncio.gather(*waiting)
        later = await signup(10)

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
    try:
        loop = asyncio.get_running_loop()
        seen = {await loop.run_in_executor(hasher._executor, _niceness) for _ in range(4)}
    finally:
        hasher.close()

    assert seen == {min(19, _niceness() + nice)}
    assert _niceness() == os.getpriority(os.PRIO_PROCESS, os.getpid())  # this thread untouched
