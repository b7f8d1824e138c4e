"""The one way the service opens its Redis client (the epoch, the revocation feed, the throttle).

Each call has 1 s to connect and 1 s to answer, and gets one more try after a timeout or a lost
connection. The retry is for a process the machine left unscheduled for a moment: asyncio then
runs the deadline's callback before the task whose answer already arrived, and a Redis that
answered in time looks late. A Redis that is down still fails within about 2 s (503), and a
retried call is safe: every call the service makes is idempotent (GET, MGET, SET with expiry, a
max-of-versions script) or harmless twice (the epoch's INCR: one more cache reload; a throttle
reservation: one attempt counted twice, at worst).
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

TIMEOUT_SECONDS = 1.0
RETRIES = 1


def connect(url: str) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
