"""CPU per Redis call from an asyncio process, as the service makes them: the epoch's ``GET``
(service/store/epoch.py) and the revocation feed's ``MGET`` of 3 keys (service/store/feed.py),
through redis-py's asyncio client (its pure-Python RESP parser, or hiredis's when installed),
beside a bare RESP exchange on one asyncio stream (what the round trip itself costs this
process: the loop's wake-ups and the socket system calls).

    bench/.venv/bin/python bench/profile/redis_calls.py [--n 5000] [--reps 3]

Run with bench/.venv (hiredis is installed there, never in the project venv); redis-py's parser
is chosen per client with ``parser_class`` so both are measured in one process, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from redis._parsers import _AsyncRESP2Parser
from redis.asyncio import Redis
from redis.asyncio.connection import ConnectionPool

try:
    import hiredis  # type: ignore[import-not-found]  # noqa: F401

    HIREDIS = True
except ImportError:  # pragma: no cover
    HIREDIS = False


def resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    prefix = f"profile-{secrets.token_hex(4)}"
    epoch_key = f"{prefix}:epoch"
    keys = [
        f"{prefix}:rv:jti:{secrets.token_hex(16)}",
        f"{prefix}:rv:ver:{secrets.token_hex(16)}",
        f"{prefix}:rv:sid:{secrets.token_hex(16)}",
    ]

    clients: dict[str, Redis] = {}
    parsers: dict[str, type[Any]] = {"redis-py (Python parser)": _AsyncRESP2Parser}
    if HIREDIS:
        from redis._parsers import _AsyncHiredisParser

        parsers["redis-py + hiredis"] = _AsyncHiredisParser
    for label, parser_class in parsers.items():
        pool = ConnectionPool.from_url(
            args.url, socket_timeout=1.0, socket_connect_timeout=1.0, parser_class=parser_class
        )
        clients[label] = Redis(connection_pool=pool)
        await clients[label].set(epoch_key, 7)
    reader, writer = await asyncio.open_connection("127.0.0.1", 6379)
    get_cmd, mget_cmd = resp(b"GET", epoch_key.encode()), resp(b"MGET", *(k.encode() for k in keys))

    async def raw_get() -> None:
        writer.write(get_cmd)
        await reader.readline()
        await reader.readline()

    async def raw_mget() -> None:
        writer.write(mget_cmd)
        await reader.readline()
        for _ in keys:
            await reader.readline()

    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "bare RESP on one stream: GET": raw_get,
        "bare RESP on one stream: MGET 3": raw_mget,
    }
    for label, client in clients.items():
        cases[f"{label}: GET"] = functools.partial(client.get, epoch_key)
        cases[f"{label}: MGET 3"] = functools.partial(client.mget, keys)
    # The loop's own cost of one suspension.
    cases["asyncio.sleep(0) (one loop iteration)"] = functools.partial(asyncio.sleep, 0)

    results: dict[str, list[tuple[float, float]]] = {label: [] for label in cases}
    for case in cases.values():
        for _ in range(200):
            await case()
    for _ in range(args.reps):
        for label, case in cases.items():
            start, wall = time.process_time(), time.perf_counter()
            for _ in range(args.n):
                await case()
            results[label].append(
                (
                    (time.process_time() - start) / args.n * 1e6,
                    (time.perf_counter() - wall) / args.n * 1e6,
                )
            )
    print(
        f"# CPU µs per call (median of {args.reps} interleaved rounds of {args.n}); "
        f"redis-py {redis.__version__}; load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'call':<44}{'CPU µs':>8}{'wall µs':>9}   rounds (CPU)")
    for label, values in results.items():
        cpu = statistics.median(v[0] for v in values)
        wall = statistics.median(v[1] for v in values)
        print(f"{label:<44}{cpu:>8.1f}{wall:>9.1f}   " + " ".join(f"{v[0]:.1f}" for v in values))
    writer.close()
    for client in clients.values():
        await client.aclose()


asyncio.run(main())
