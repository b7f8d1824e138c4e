"""Holding the hashing pool still: jobs that stay in it until released, to fill its queue."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from passlib.context import CryptContext

from service.core.passwords import PasswordHasher
from tests.servers import HANG_GUARD_SECONDS
from tests.support import PASSWORD, Client


class WatchedContext:
    """Stands in for a hasher's CryptContext (its public ``context``): every ``hash`` first calls
    ``before``, in the hashing thread, then hashes with the real context."""

    def __init__(self, real: Any, before: Callable[[], object]) -> None:
        self._real = real
        self._before = before

    def hash(self, secret: str) -> str:
        self._before()
        return str(self._real.hash(secret))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def watched(hasher: PasswordHasher, before: Callable[[], object]) -> CryptContext:
    return cast("CryptContext", WatchedContext(hasher.context, before))


def hold_hashing(hasher: PasswordHasher) -> threading.Event:
    """Every hash waits until the returned event is set, so jobs stay in the pool."""
    release = threading.Event()
    hasher.context = watched(hasher, lambda: release.wait(timeout=30))
    return release


def start_signup(client: Client, index: int) -> asyncio.Task[Any]:
    body = {"username": f"user{index}", "email": f"u{index}@x.io", "password": PASSWORD}
    return asyncio.create_task(client.post("/signup", json=body))


async def until_pending(hasher: PasswordHasher, jobs: int) -> None:
    """Until ``jobs`` hashing jobs hold their places in the pool (however long a busy machine
    takes to get them there; a count of polls would give up and let the test go on wrongly)."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while hasher.pending < jobs:
        if time.monotonic() > deadline:
            raise AssertionError(f"{hasher.pending} of {jobs} hashing jobs ever got to the pool")
        await asyncio.sleep(0.01)
