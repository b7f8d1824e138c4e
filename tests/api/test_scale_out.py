"""Many processes on PostgreSQL + Redis, and what happens when Redis is down (fail closed)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.core.config import Settings
from tests.servers import clean_env, free_port, hypercorn_server
from tests.support import PASSWORD, SettingsFactory, make_settings, running_app


async def test_redis_down_fails_closed(tmp_path: Path) -> None:
    # Nothing listens there: revocation state and throttle counters cannot be read.
    settings = make_settings(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with running_app(settings) as app:
        client = app.test_client()
        signup = await client.post(
            "/signup", json={"username": "alice", "email": "a@x.io", "password": PASSWORD}
        )
        login = await client.post("/login", json={"username": "alice", "password": PASSWORD})
        ready = await client.get("/ready")

    assert signup.status_code == 201  # needs neither revocation state nor the throttle
    for response in (login, ready):
        assert response.status_code == 503
        assert (await response.get_json())["code"] == "SERVICE_UNAVAILABLE"


async def test_redis_down_refuses_tokens_instead_of_accepting_them(tmp_path: Path) -> None:
    good = make_settings(tmp_path, jwt_secret="r" * 48, throttle_enabled=False)
    broken = make_settings(
        tmp_path,
        jwt_secret="r" * 48,
        throttle_enabled=False,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    async with running_app(good) as first:
        client = first.test_client()
        await client.post(
            "/signup", json={"username": "alice", "email": "a@x.io", "password": PASSWORD}
        )
        pair = await (
            await client.post("/login", json={"username": "alice", "password": PASSWORD})
        ).get_json()
    async with running_app(broken) as second:
        response = await second.test_client().get(
            "/protected", headers={"Authorization": f"Bearer {pair['access_token']}"}
        )

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"


def service_env(settings: Settings) -> dict[str, str]:
    """A real server process (hypercorn) configured by AUTH_* variables like ``settings``."""
    return clean_env(
        AUTH_ENV="testing",
        AUTH_DATABASE_URL=settings.database_url,
        AUTH_REDIS_URL=settings.redis_url or "",
        AUTH_REDIS_PREFIX=settings.redis_prefix,
        AUTH_JWT_SECRET="p" * 48,
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
        AUTH_REFRESH_REUSE_GRACE_SECONDS="0",
        AUTH_THROTTLE_ACCOUNT_LIMITS="3/minute",
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql+redis"], indirect=True)
async def test_two_processes_share_revocation_throttle_and_reuse_detection(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = settings_factory()
    async with (
        hypercorn_server(tmp_path, service_env(settings)) as one,
        hypercorn_server(tmp_path, service_env(settings)) as two,
        httpx.AsyncClient(base_url=one) as a,
        httpx.AsyncClient(base_url=two) as b,
    ):
        await a.post("/signup", json={"username": "alice", "email": "a@x.io", "password": PASSWORD})
        await a.post("/signup", json={"username": "bob", "email": "b@x.io", "password": PASSWORD})

        # A logout through one process is refused by the other on the next request.
        pair = (await a.post("/login", json={"username": "alice", "password": PASSWORD})).json()
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}
        assert (await b.get("/protected", headers=bearer)).status_code == 200
        assert (await a.post("/logout", headers=bearer)).status_code == 204
        refused = await b.get("/protected", headers=bearer)
        assert refused.status_code == 401
        assert refused.json()["code"] == "TOKEN_REVOKED"

        # Throttle counts are shared: failures on one process lock the account on the other.
        for client in (a, b, a):
            await client.post("/login", json={"username": "bob", "password": "wrong-password"})
        throttled = await b.post("/login", json={"username": "bob", "password": PASSWORD})
        assert throttled.status_code == 429

        # A refresh-token reuse detected by one process revokes the family for both.
        pair = (await a.post("/login", json={"username": "alice", "password": PASSWORD})).json()
        old = {"Authorization": f"Bearer {pair['refresh_token']}"}
        rotated = (await a.post("/refresh", headers=old)).json()
        reuse = await b.post("/refresh", headers=old)
        assert reuse.status_code == 401
        assert reuse.json()["code"] == "TOKEN_REUSED"
        newest = await a.post(
            "/refresh", headers={"Authorization": f"Bearer {rotated['refresh_token']}"}
        )
        assert newest.json()["code"] == "TOKEN_REVOKED"
        access = await a.get(
            "/protected", headers={"Authorization": f"Bearer {rotated['access_token']}"}
        )
        assert access.status_code == 401
