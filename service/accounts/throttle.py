"""Login throttling: sliding windows per account+IP and per IP, with atomic reservations.

Several windows make the delays grow (by default 5 failures a minute, 10 in ten minutes, 20 an
hour for one account from one address); every window ends, so no lockout is permanent. Windows
are written in the `limits` notation (``5/minute;10/10 minutes``).

An attempt *reserves* its place in every window before the password is checked, in one atomic
step (one event-loop step in memory, one Lua script in Redis): of twelve concurrent guesses
with five places left, five are checked and seven are refused, never all twelve. A failed
attempt keeps its place; a successful one gives its address place back and clears the
account's windows; an attempt that never got to check anything (the hashing queue was full)
gives all its places back.

"Account" means the account, not the string typed: the caller passes the user's id when the
login names a user, so the username and the email of one account share their counters.

Counts live in this process by default, in Redis when ``AUTH_REDIS_URL`` is set (then shared by
every process). A Redis error propagates (the app answers 503): the service never guesses.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from limits import RateLimitItem, parse_many
from redis.asyncio import Redis

from service.core.errors import TooManyAttempts
from service.store import redis_client

PASSWORD_SCOPE = "password"
# Second-factor answers (TOTP and recovery codes): per account from every address together
# (whoever has the password may try from many), with the password's account windows.
MFA_SCOPE = "mfa"
REFRESH_SCOPE = "refresh"
# The mailed links (service/accounts/email_flows.py): every request takes its places, since
# each one may send a message. "Account" is the address typed for a forgotten password (known
# or not: the answer must not tell), the user for a new verification link or a reset.
FORGOT_SCOPE = "password-forgot"
VERIFY_REQUEST_SCOPE = "verify-request"
RESET_SCOPE = "password-reset"
MAIL_SCOPES = frozenset({FORGOT_SCOPE, VERIFY_REQUEST_SCOPE, RESET_SCOPE})
# Enough for a person who retries (a message that is slow to arrive, a typo), too few to flood
# a mailbox or send a reset link to every address of a list.
MAIL_ACCOUNT_LIMITS = "3/15 minutes;10/day"
MAIL_ADDRESS_LIMITS = "20/hour;100/day"


@dataclass(frozen=True)
class Window:
    """At most ``amount`` attempts in any ``seconds`` (a sliding window)."""

    amount: int
    seconds: int

    @classmethod
    def of(cls, item: RateLimitItem) -> Window:
        return cls(item.amount, item.get_expiry())


def parse_windows(text: str) -> tuple[Window, ...]:
    return tuple(Window.of(item) for item in parse_many(text))


@dataclass(frozen=True)
class ThrottleLimits:
    account: Sequence[Window]
    address: Sequence[Window]
    refresh: Sequence[Window]
    mail_account: Sequence[Window] = parse_windows(MAIL_ACCOUNT_LIMITS)
    mail_address: Sequence[Window] = parse_windows(MAIL_ADDRESS_LIMITS)

    @classmethod
    def parse(cls, account: str, address: str, refresh: str) -> ThrottleLimits:
        return cls(parse_windows(account), parse_windows(address), parse_windows(refresh))


# One counter: its storage key and its window.
Counter = tuple[str, Window]


class WindowStore(Protocol):
    async def reserve(self, counters: Sequence[Counter], member: str, now: float) -> float:
        """Add ``member`` to every counter if each has room, and return 0; else add it to none
        and return the seconds until the fullest one has room."""
        ...

    async def release(self, keys: Sequence[str], member: str) -> None: ...

    async def clear(self, keys: Sequence[str]) -> None: ...

    async def close(self) -> None: ...


class MemoryWindows:
    """The windows of one process: reserve runs without an await, so it is atomic."""

    def __init__(self) -> None:
        self._events: dict[str, deque[tuple[float, str]]] = {}

    async def reserve(self, counters: Sequence[Counter], member: str, now: float) -> float:
        wait = 0.0
        for key, window in counters:
            events = self._events.get(key)
            if events is None:
                continue
            while events and events[0][0] <= now - window.seconds:
                events.popleft()
            if len(events) >= window.amount:
                oldest = events[len(events) - window.amount][0]
                wait = max(wait, oldest + window.seconds - now)
        if wait > 0:
            return wait
        for key, _ in counters:
            self._events.setdefault(key, deque()).append((now, member))
        return 0.0

    async def release(self, keys: Sequence[str], member: str) -> None:
        for key in keys:
            events = self._events.get(key)
            if events is not None:
                self._events[key] = deque(event for event in events if event[1] != member)

    async def clear(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._events.pop(key, None)

    async def close(self) -> None:
        self._events.clear()


# KEYS: the counters' sorted sets. ARGV: now, member, then amount and seconds per key.
_RESERVE = """
local now = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local amount = tonumber(ARGV[1 + 2 * i])
  local seconds = tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - seconds)
  local count = redis.call('ZCARD', key)
  if count >= amount then
    local oldest = redis.call('ZRANGE', key, count - amount, count - amount, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + seconds - now)
  end
end
if wait > 0 then
  return tostring(wait)
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('EXPIRE', key, tonumber(ARGV[2 + 2 * i]))
end
return '0'
"""


class RedisWindows:
    """The windows of every process, as Redis sorted sets (member: one attempt)."""

    def __init__(self, url: str) -> None:
        self._redis: Redis = redis_client.connect(url)
        self._reserve = self._redis.register_script(_RESERVE)

    async def reserve(self, counters: Sequence[Counter], member: str, now: float) -> float:
        keys = [key for key, _ in counters]
        args: list[str | float] = [now, member]
        for _, window in counters:
            args += [window.amount, window.seconds]
        wait = await self._reserve(keys=keys, args=args)
        return float(wait)

    async def release(self, keys: Sequence[str], member: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrem(key, member)
            await pipe.execute()

    async def clear(self, keys: Sequence[str]) -> None:
        if keys:
            await self._redis.delete(*keys)

    async def close(self) -> None:
        await self._redis.aclose()


@dataclass(frozen=True)
class Attempt:
    """The places one attempt holds, until it succeeds, fails or is abandoned."""

    member: str
    address_keys: tuple[str, ...]
    account_keys: tuple[str, ...]


class Outcome:
    """What became of an attempt: a failure unless ``succeeded()`` is called."""

    def __init__(self) -> None:
        self.success = False

    def succeeded(self) -> None:
        self.success = True


class Throttle:
    def __init__(
        self, limits: ThrottleLimits, redis_url: str | None = None, prefix: str = "auth-service"
    ) -> None:
        self.limits = limits
        self.prefix = f"{prefix}:throttle"
        self.store: WindowStore = RedisWindows(redis_url) if redis_url else MemoryWindows()

    async def attempt(self, scope: str, *, account: str | None, ip: str) -> Attempt:
        """Reserve this attempt's place in every window, or raise TooManyAttempts (429 with
        Retry-After) and reserve none."""
        address = self._counters(scope, "ip", ip, self._address_windows(scope))
        per_account: list[Counter] = []
        if account is not None and scope == PASSWORD_SCOPE:
            per_account = self._counters(scope, "account", f"{account}:{ip}", self.limits.account)
        elif account is not None and scope == MFA_SCOPE:
            per_account = self._counters(scope, "account", account, self.limits.account)
        elif account is not None and scope in MAIL_SCOPES:
            # From every address together: a mailbox is flooded from many as well as from one.
            per_account = self._counters(scope, "account", account, self.limits.mail_account)
        member = secrets.token_hex(8)
        wait = await self.store.reserve([*address, *per_account], member, time.time())
        if wait > 0:
            raise TooManyAttempts(max(1, math.ceil(wait)))
        return Attempt(
            member,
            tuple(key for key, _ in address),
            tuple(key for key, _ in per_account),
        )

    async def succeeded(self, attempt: Attempt) -> None:
        """A success: the address's places come back and the account starts afresh."""
        await self.store.release(attempt.address_keys, attempt.member)
        await self.store.clear(attempt.account_keys)

    async def abandoned(self, attempt: Attempt) -> None:
        """Nothing was checked (e.g. the hashing queue was full): every place comes back."""
        await self.store.release((*attempt.address_keys, *attempt.account_keys), attempt.member)

    @asynccontextmanager
    async def attempting(
        self,
        scope: str,
        *,
        account: str | None,
        ip: str,
        counts: Callable[[BaseException], bool] = lambda _error: False,
    ) -> AsyncIterator[Outcome]:
        """One attempt, start to end: its places are reserved on entry (TooManyAttempts when
        none is left); the block calls ``outcome.succeeded()`` on a success. On exit a success
        gives its places back, a failure keeps them, and an error gives them all back unless
        ``counts(error)`` says it is a failure (a refused token, say) rather than a check that
        never ran."""
        attempt = await self.attempt(scope, account=account, ip=ip)
        outcome = Outcome()
        try:
            yield outcome
        except BaseException as error:
            if not counts(error):
                await self.abandoned(attempt)
            raise
        if outcome.success:
            await self.succeeded(attempt)

    async def close(self) -> None:
        await self.store.close()

    def _address_windows(self, scope: str) -> Sequence[Window]:
        if scope in MAIL_SCOPES:
            return self.limits.mail_address
        return self.limits.refresh if scope == REFRESH_SCOPE else self.limits.address

    def _counters(
        self, scope: str, kind: str, identity: str, windows: Sequence[Window]
    ) -> list[Counter]:
        return [
            (f"{self.prefix}:{scope}:{kind}:{identity}:{w.amount}/{w.seconds}", w) for w in windows
        ]
