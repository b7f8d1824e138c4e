"""The change epoch: one counter that moves whenever a token's validity or a user changes.

Every process keeps verified token subjects in memory, tagged with the epoch read before they
were loaded; a request whose token is cached needs no database round trip, only a read of the
epoch. Any revocation (logout, logout-everywhere, password change, role removal, disabling,
session deletion, refresh-token reuse) or user update bumps the epoch *before its request
returns*, so the next request in any process sees a new epoch and reloads: revocation stays
immediate everywhere.

Where the counter lives:
- with ``AUTH_REDIS_URL``: a Redis key (every process on every machine); Redis unreachable means
  the service cannot know what was revoked, so it fails closed (503), never accepts blindly;
- on SQLite without Redis: an 8-byte memory-mapped file beside the database, shared by every
  process on the machine (a read is a memory load, no system call);
- on PostgreSQL without Redis: nowhere, so there is no cache and every request asks the
  database (processes on other machines could not see a local counter).
"""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
import struct
from pathlib import Path
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.core.errors import RedisUnavailable
from service.store import redis_client
from service.store.db import Database, beside, unusable_file

_COUNTER = struct.Struct("<Q")


class Epoch(Protocol):
    async def current(self) -> int: ...

    async def bump(self) -> None: ...

    async def close(self) -> None: ...


class FileEpoch:
    """A counter in a shared memory-mapped file; bumps are serialised with flock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < _COUNTER.size:
            os.ftruncate(self._fd, _COUNTER.size)
        self._map = mmap.mmap(self._fd, _COUNTER.size)

    async def current(self) -> int:
        value: int = _COUNTER.unpack_from(self._map)[0]
        return value

    async def bump(self) -> None:
        # Held for a read and a write of 8 bytes: microseconds, so fine on the event loop.
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            _COUNTER.pack_into(self._map, 0, _COUNTER.unpack_from(self._map)[0] + 1)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    async def close(self) -> None:
        self._map.close()
        os.close(self._fd)


class RedisEpoch:
    """The counter in Redis. While one GET is on its way, the reads asked meanwhile share the
    next one, sent when it answers.

    Every guarded request reads the epoch: one GET each would cost a round trip per request (in
    redis-py's Python code, more CPU than the rest of the request's auth). A read with no GET on
    its way sends its own at once; one asked while a GET is on its way joins the batch that
    waits for it (``_pending``), never that GET itself: a GET sent before a request arrived may
    predate a revocation the request must see. The batch's GET is sent when the one on its way
    answers, after every member of the batch asked; so every answer comes from a GET sent after
    its request asked, as if each had sent its own, and a process sends at most one GET per
    round trip whatever the number of requests.
    """

    def __init__(self, url: str, prefix: str, *, client: Redis | None = None) -> None:
        self._redis: Redis = client if client is not None else redis_client.connect(url)
        self._key = f"{prefix}:epoch"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False  # a GET is on its way
        self._pending: asyncio.Future[int] | None = None  # the next GET's readers

    async def current(self) -> int:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests): nothing of the old one is left
            self._loop, self._busy, self._pending = loop, False, None
        if not self._busy:
            self._busy = True
            try:
                return await self._read()
            finally:
                self._send_pending()
        pending = self._pending
        if pending is None:
            pending = self._pending = loop.create_future()
        # shield: one reader cancelled (its client left) must not cancel the others' read.
        return await asyncio.shield(pending)

    def _send_pending(self) -> None:
        """The GET on its way answered: send the one its batch waits for, if any."""
        pending = self._pending
        if pending is None:
            self._busy = False
            return
        self._pending = None  # closed: every reader of this GET asked before it is sent
        task = asyncio.ensure_future(self._read())
        task.add_done_callback(lambda done: self._answered(pending, done))

    def _answered(self, pending: asyncio.Future[int], done: asyncio.Future[int]) -> None:
        _settle(pending, done)
        self._send_pending()

    async def _read(self) -> int:
        try:
            value = await self._redis.get(self._key)
        except RedisError as exc:
            raise RedisUnavailable() from exc
        return int(value or 0)

    async def bump(self) -> None:
        try:
            await self._redis.incr(self._key)
        except RedisError as exc:
            raise RedisUnavailable() from exc

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise RedisUnavailable() from exc

    async def close(self) -> None:
        await self._redis.aclose()


def _settle(pending: asyncio.Future[int], done: asyncio.Future[int]) -> None:
    """``done``'s answer (or error) on ``pending``, which every waiter of the read awaits."""
    if pending.done():
        return
    if done.cancelled():
        pending.cancel()
    elif (error := done.exception()) is not None:
        pending.set_exception(error)
        # Retrieved here: a read nobody waits for any more (all cancelled) must not warn.
        pending.exception()
    else:
        pending.set_result(done.result())


def open_epoch(database: Database) -> Epoch | None:
    """The change epoch for this deployment (see the module's docstring), or None: no cache."""
    settings = database.settings
    if settings.redis_url:
        return RedisEpoch(settings.redis_url, settings.redis_prefix)
    if database.sqlite_file is None:
        return None
    epoch_file = beside(database.sqlite_file, "-epoch")
    try:
        return FileEpoch(epoch_file)
    except OSError as exc:
        raise unusable_file(f"cannot open {epoch_file}", exc) from None
