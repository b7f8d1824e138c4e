"""Login throttling on the `limits` library: failures counted per account+IP and per IP.

Several windows make the delays grow (by default 5 failures a minute, 10 in ten minutes, 20 an
hour for one account from one address); every window ends, so no lockout is permanent. A success
clears the account+IP counters. Counts live in this process by default, in Redis when
``AUTH_REDIS_URL`` is set (then shared by every process).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from .errors import TooManyAttempts

PASSWORD_SCOPE = "password"
REFRESH_SCOPE = "refresh"


@dataclass(frozen=True)
class ThrottleLimits:
    account: Sequence[RateLimitItem]
    address: Sequence[RateLimitItem]
    refresh: Sequence[RateLimitItem]

    @classmethod
    def parse(cls, account: str, address: str, refresh: str) -> ThrottleLimits:
        return cls(parse_many(account), parse_many(address), parse_many(refresh))


class Throttle:
    def __init__(
        self, limits: ThrottleLimits, redis_url: str | None = None, prefix: str = "auth-service"
    ) -> None:
        self.limits = limits
        self.storage: Storage = (
            RedisStorage(
                redis_url.replace("redis://", "async+redis://", 1),
                implementation="redispy",
                key_prefix=f"{prefix}:throttle",
            )
            if redis_url
            else MemoryStorage()
        )
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def check(self, scope: str, *, account: str | None, ip: str) -> None:
        """Raise TooManyAttempts (429 with Retry-After) when any window is full."""
        for item, identifiers in self._windows(scope, account, ip):
            if not await self.limiter.test(item, *identifiers):
                stats = await self.limiter.get_window_stats(item, *identifiers)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                raise TooManyAttempts(retry_after)

    async def failed(self, scope: str, *, account: str | None, ip: str) -> None:
        for item, identifiers in self._windows(scope, account, ip):
            await self.limiter.hit(item, *identifiers)

    async def succeeded(self, scope: str, *, account: str | None, ip: str) -> None:
        if account is None:
            return
        for item in self.limits.account:
            await self.limiter.clear(item, scope, "account", account.lower(), ip)

    def _windows(
        self, scope: str, account: str | None, ip: str
    ) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
        if scope == REFRESH_SCOPE:
            return [(item, (scope, "ip", ip)) for item in self.limits.refresh]
        windows: list[tuple[RateLimitItem, tuple[str, ...]]] = [
            (item, (scope, "ip", ip)) for item in self.limits.address
        ]
        if account is not None:
            windows += [
                (item, (scope, "account", account.lower(), ip)) for item in self.limits.account
            ]
        return windows
