"""The service's Redis client (service/store/redis_client.py) tries a call once more after a
lost connection or a timeout, and still fails when Redis does not answer at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.exceptions import RedisError

from service.store import redis_client
from tests import backends


class Proxy:
    """A TCP proxy in front of the test Redis that drops its first ``drop`` connections (and,
    with ``silent``, answers none at all), like a connection lost to a restart or a stall."""

    def __init__(self, *, drop: int = 0, silent: bool = False) -> None:
        self.drop, self.silent, self.accepted = drop, silent, 0
        target = urlsplit(backends.REDIS_URL)
        self.target = (target.hostname or "127.0.0.1", target.port or 6379)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.silent:
            await reader.read()  # hold the connection, never answer
            return
        if self.accepted <= self.drop:
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


async def serving(proxy: Proxy) -> AsyncIterator[str]:
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _redis_reachable() -> None:
    backends.check_redis()


async def test_a_lost_connection_is_tried_once_more() -> None:
    proxy = Proxy(drop=1)
    async for url in serving(proxy):
        client = redis_client.connect(url)
        try:
            assert await client.ping() is True
        finally:
            await client.aclose()

    assert proxy.accepted == 2


async def test_two_lost_connections_fail() -> None:
    proxy = Proxy(drop=2)
    async for url in serving(proxy):
        client = redis_client.connect(url)
        try:
            with pytest.raises(RedisError):
                await client.ping()
        finally:
            await client.aclose()


async def test_a_redis_that_never_answers_fails_after_the_retry() -> None:
    proxy = Proxy(silent=True)
    async for url in serving(proxy):
        client = redis_client.connect(url)
        try:
            with pytest.raises(RedisError):
                await client.ping()
        finally:
            await client.aclose()

    # Each try has its own deadline: two tries, not more.
    assert proxy.accepted == 2
