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
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.core.errors import ServiceUnavailable

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
    def __init__(self, url: str, prefix: str) -> None:
        self._redis: Redis = Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._key = f"{prefix}:epoch"

    async def current(self) -> int:
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


class RedisUnavailable(ServiceUnavailable):
    default_detail = "Revocation state (Redis) is unavailable; try again shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


@dataclass
class _Entry:
    epoch: int
    loaded_at: float
    value: Any


SubjectKey = tuple[str, str, str | None, int]


class SubjectCache:
    """Verified token subjects by ``(jti, sub, sid, ver)``: every claim the loaded answer
    depends on. Valid while the epoch has not moved (and ``ttl``)."""

    def __init__(self, epoch: Epoch, *, max_entries: int = 10_000, ttl: float = 60.0) -> None:
        self.epoch = epoch
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: OrderedDict[SubjectKey, _Entry] = OrderedDict()
        # One load per key at a time: a burst of requests with a token nobody has verified yet
        # waits for the first request's query instead of stampeding the database pool.
        # Keyed by (key, epoch): a load begun before a change is never shared after it.
        self.loading: dict[tuple[SubjectKey, int], asyncio.Future[Any]] = {}

    def get(self, key: SubjectKey, epoch: int) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.epoch != epoch or time.monotonic() - entry.loaded_at > self.ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: SubjectKey, epoch: int, value: Any) -> None:
        self._entries[key] = _Entry(epoch, time.monotonic(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
