"""The Redis epoch's reads: concurrent ones share one GET, never one sent before they arrived."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from service.core.errors import RedisUnavailable
from service.store.epoch import RedisEpoch
from tests import backends


class FakeRedis:
    """A Redis whose GET reads the value when it is sent and answers when ``answer`` is set."""

    def __init__(self) -> None:
        self.value = 0
        self.gets = 0
        self.answer = asyncio.Event()
        self.answer.set()
        self.error: Exception | None = None
        self.sent = asyncio.Event()  # set by every GET sent

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        self.sent.set()
        sent_value, error = self.value, self.error
        await asyncio.sleep(0)  # a round trip always gives the loop a turn
        await self.answer.wait()
        if error is not None:
            raise error
        return str(sent_value).encode() if sent_value else None

    async def incr(self, key: str) -> int:
        self.value += 1
        return self.value

    async def aclose(self) -> None:
        pass


def epoch_over(fake: FakeRedis) -> RedisEpoch:
    return RedisEpoch("redis://unused", "test", client=cast(Redis, fake))


async def test_reads_asked_while_a_get_is_on_its_way_share_the_next_one() -> None:
    fake = FakeRedis()
    epoch = epoch_over(fake)
    await epoch.bump()

    values = await asyncio.gather(*(epoch.current() for _ in range(20)))

    # The first read sends its GET at once; the 19 asked meanwhile share the next.
    assert values == [1] * 20
    assert fake.gets == 2


async def test_each_read_after_an_answer_sends_its_own_get() -> None:
    fake = FakeRedis()
    epoch = epoch_over(fake)

    assert [await epoch.current() for _ in range(3)] == [0, 0, 0]
    assert fake.gets == 3


async def test_a_read_asked_while_a_get_is_on_its_way_does_not_join_it() -> None:
    # The GET in flight was sent before the revocation below: a request that arrives after the
    # revocation must see it, so it needs a GET of its own.
    fake = FakeRedis()
    epoch = epoch_over(fake)
    fake.answer.clear()
    early = asyncio.ensure_future(epoch.current())
    await fake.sent.wait()
    fake.sent.clear()

    await epoch.bump()  # a revocation, committed before the next request arrives
    late = asyncio.ensure_future(epoch.current())
    await asyncio.sleep(0)  # the late read is waiting (for the next GET, not this one)
    assert fake.gets == 1
    fake.answer.set()

    assert await early == 0
    assert await late == 1
    assert fake.gets == 2


async def test_a_read_after_a_failed_get_sends_a_new_one() -> None:
    fake = FakeRedis()
    fake.error = RedisConnectionError("down")
    epoch = epoch_over(fake)
    with pytest.raises(RedisUnavailable):
        await epoch.current()

    fake.error = None
    await epoch.bump()

    assert await epoch.current() == 1


async def test_a_waiter_cancelled_leaves_the_others_their_answer() -> None:
    fake = FakeRedis()
    epoch = epoch_over(fake)
    await epoch.bump()
    fake.answer.clear()
    leaving = asyncio.ensure_future(epoch.current())
    staying = asyncio.ensure_future(epoch.current())
    await fake.sent.wait()

    leaving.cancel()
    fake.answer.set()

    assert await staying == 1
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_redis_unreachable_refuses_every_waiter() -> None:
    fake = FakeRedis()
    fake.error = RedisConnectionError("down")
    epoch = epoch_over(fake)

    results = await asyncio.gather(*(epoch.current() for _ in range(3)), return_exceptions=True)

    assert [type(result) for result in results] == [RedisUnavailable] * 3
    assert fake.gets == 2


async def test_a_bump_before_a_read_is_seen_on_a_real_redis() -> None:
    backends.check_redis()
    prefix = f"test-epoch-{id(object())}"
    epoch = RedisEpoch(backends.REDIS_URL, prefix)
    try:
        before = await epoch.current()
        # Many requests in flight, a revocation, then requests that arrived after it.
        in_flight = [asyncio.ensure_future(epoch.current()) for _ in range(10)]
        await asyncio.sleep(0)
        await epoch.bump()
        after = await asyncio.gather(*(epoch.current() for _ in range(10)))
        assert all(value in (before, before + 1) for value in await asyncio.gather(*in_flight))
        assert after == [before + 1] * 10
    finally:
        await epoch.close()
        backends.drop_redis_prefix(prefix)
