"""The real backends the suite runs against: SQLite always; PostgreSQL + Redis when reachable.

Under ``CI=true`` an unreachable PostgreSQL or Redis fails the tests that need it (loudly, with
the reason); elsewhere those tests are skipped. Each test gets its own PostgreSQL database,
copied from a template migrated once per session (per xdist worker: each has its own), and its
own Redis key prefix; every name carries the worker's id.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg
import pytest
import redis

T = TypeVar("T")

POSTGRES_ADMIN_URL = os.environ.get(
    "AUTH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("AUTH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI") == "true"
# "gw0", "gw1", ... under pytest-xdist; "main" in a run without workers.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run admin coroutines on a private loop, callable even from inside a running loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def unavailable(what: str, error: BaseException) -> None:
    reason = f"{what} is not reachable ({type(error).__name__}: {error})"
    if IN_CI:
        pytest.fail(f"CI=true requires it: {reason}", pytrace=False)
    pytest.skip(f"{reason}; with CI=true this fails instead")


def postgres_url(database: str) -> str:
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{database}"


async def _admin(*statements: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def check_postgres() -> None:
    try:
        run_sync(_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        unavailable("PostgreSQL", error)


def check_redis() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        unavailable("Redis", error)


def create_database(template: str | None = None) -> str:
    name = f"auth_test_{WORKER}_{uuid.uuid4().hex[:12]}"
    clause = f" TEMPLATE {template}" if template else ""
    run_sync(_admin(f'CREATE DATABASE "{name}"{clause}'))
    return name


def drop_database(name: str) -> None:
    run_sync(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def drop_redis_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
