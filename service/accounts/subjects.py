"""The subject cache: the live user behind a verified access token, kept until the epoch moves.

A request whose token was seen before needs no database round trip, only a read of the change
epoch (``service/store/epoch.py``); any revocation bumps the epoch before its request returns, so
the next request in every process reloads.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from service.store.epoch import Epoch
from service.store.models import User

# Every claim the loaded answer depends on: (jti, sub, sid, ver). A token that shares only the
# jti of a cached one (another sub, sid or version) is another question, and gets its own load.
SubjectKey = tuple[str, str, str | None, int]


@dataclass
class _Entry:
    epoch: int
    loaded_at: float
    user: User


class SubjectCache:
    """Users by ``SubjectKey``, valid while the epoch has not moved (and for ``ttl`` seconds)."""

    def __init__(self, epoch: Epoch, *, max_entries: int = 10_000, ttl: float = 60.0) -> None:
        self.epoch = epoch
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: OrderedDict[SubjectKey, _Entry] = OrderedDict()
        # One load per key at a time: a burst of requests with a token nobody has verified yet
        # waits for the first request's query instead of stampeding the database pool.
        # Keyed by (key, epoch): a load begun before a change is never shared after it.
        self._loading: dict[tuple[SubjectKey, int], asyncio.Future[User]] = {}

    async def get_or_load(self, key: SubjectKey, load: Callable[[], Awaitable[User]]) -> User:
        """The cached user for ``key`` at the current epoch, else ``load()``'s (or its error),
        shared with every request asking for the same key meanwhile."""
        epoch = await self.epoch.current()
        cached = self.get(key, epoch)
        if cached is not None:
            return cached
        pending = self._loading.get((key, epoch))
        if pending is not None:
            # Another request is loading this very token: share its answer (or its refusal).
            return await asyncio.shield(pending)
        future: asyncio.Future[User] = asyncio.get_running_loop().create_future()
        self._loading[(key, epoch)] = future
        try:
            user = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unawaited future does not warn
            raise
        else:
            future.set_result(user)
            self.put(key, epoch, user)
            return user
        finally:
            del self._loading[(key, epoch)]

    def get(self, key: SubjectKey, epoch: int) -> User | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.epoch != epoch or time.monotonic() - entry.loaded_at > self.ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.user

    def put(self, key: SubjectKey, epoch: int, user: User) -> None:
        self._entries[key] = _Entry(epoch, time.monotonic(), user)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
