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
    """The counter in Redis. Concurrent reads share one GET, sent after all of them arrived.

    Every guarded request reads the epoch: one GET each would cost a round trip per request (in
    redis-py's Python code, more CPU than the rest of the request's auth). A read joins the GET
    that is about to be sent (``_pending``: scheduled on the loop, not yet written to Redis),
    never one already sent: a GET sent before a request arrived may predate a revocation that
    request must see. So every answer comes from a GET sent after its request asked, as if each
    had sent its own; a burst of requests in one turn of the loop sends one.
    """

    def __init__(self, url: str, prefix: str, *, client: Redis | None = None) -> None:
        self._redis: Redis = (
            client
            if client is not None
            else Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        )
        self._key = f"{prefix}:epoch"
        self._pending: asyncio.Future[int] | None = None

    async def current(self) -> int:
        pending, loop = self._pending, asyncio.get_running_loop()
        if pending is None or pending.get_loop() is not loop:
            pending = self._pending = loop.create_future()
            # Sent on the loop's next turn: the reads asked in this turn join it first.
            loop.call_soon(self._send, pending)
        # shield: one waiter cancelled (its client left) must not cancel the others' read.
        return await asyncio.shield(pending)

    def _send(self, pending: asyncio.Future[int]) -> None:
        # From here on the GET is on its way: later reads start the next one.
        self._pending = None
        task = asyncio.ensure_future(self._read())
        task.add_done_callback(lambda done: _settle(pending, done))

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
