"""GET /metrics from a real two-worker python -m service.serve: every count summed over the
workers, whichever worker answers the scrape; route labels are templates."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.core.metrics import UNMATCHED_ROUTE
from service.ops.serve import METRICS_DIRECTORY_PREFIX
from tests.servers import clean_env, run_python
from tests.supervised import supervised_server
from tests.support import PASSWORD, bearer

pytestmark = pytest.mark.slow

SIGNUPS = 5
GOOD_LOGINS = 3
BAD_LOGINS = 3  # the account's window: the next attempt is throttled
WORKERS = 2

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples: Samples, route: str, method: str, status: int) -> float:
    return value(
        samples,
        "http_request_duration_seconds_count",
        route=route,
        method=method,
        status=str(status),
    )


async def fresh(base: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    """One request on a connection of its own (so the kernel spreads them over the workers)."""
    async with httpx.AsyncClient(base_url=base) as client:
        return await client.request(method, path, **kwargs)  # type: ignore[arg-type]


def auth_samples(samples: Samples) -> Samples:
    """The auth counters and the hashing metrics (what the scrapes themselves do not move)."""
    return {key: v for key, v in samples.items() if key[0].startswith("auth_")}


async def test_metrics_sum_every_worker_and_label_routes_by_template(tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = clean_env(
        AUTH_ENV="testing",
        AUTH_JWT_SECRET="m" * 48,
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
        AUTH_THROTTLE_ACCOUNT_LIMITS=f"{BAD_LOGINS}/minute",
        AUTH_THROTTLE_IP_LIMITS="100000/minute",
        AUTH_REFRESH_REUSE_GRACE_SECONDS="0",
        # JSON access lines name the worker (pid) that answered.
        AUTH_LOG_FORMAT="json",
        TMPDIR=str(temporary),
    )
    created = run_python("-m", "service", "clients", "create", "reporting", cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    machine = json.loads(created.stdout)

    async with supervised_server(tmp_path, env, workers=WORKERS) as server:
        base = server.base
        (directory,) = temporary.glob(f"{METRICS_DIRECTORY_PREFIX}*")
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700

        for n in range(SIGNUPS):
            body = {"username": f"user{n}", "email": f"user{n}@example.com", "password": PASSWORD}
            assert (await fresh(base, "POST", "/signup", json=body)).status_code == 201
        pairs = []
        for n in range(GOOD_LOGINS):
            credentials = {"username": f"user{n}", "password": PASSWORD}
            response = await fresh(base, "POST", "/login", json=credentials)
            assert response.status_code == 200
            pairs.append(response.json())
        # The throttle's windows are per process: one connection keeps these on one worker.
        async with httpx.AsyncClient(base_url=base) as one_connection:
            wrong = {"username": "user4", "password": "not the password"}
            for _ in range(BAD_LOGINS):
                assert (await one_connection.post("/login", json=wrong)).status_code == 401
            assert (await one_connection.post("/login", json=wrong)).status_code == 429
        spent = pairs[0]["refresh_token"]
        assert (await fresh(base, "POST", "/refresh", headers=bearer(spent))).status_code == 200
        reused = await fresh(base, "POST", "/refresh", headers=bearer(spent))
        assert reused.json()["code"] == "TOKEN_REUSED"
        grant = {"grant_type": "client_credentials"}
        secret = (machine["client_id"], machine["client_secret"])
        assert (await fresh(base, "POST", "/token", data=grant, auth=secret)).status_code == 200
        unknown_session = f"/sessions/{uuid.uuid4()}"
        access = bearer(pairs[1]["access_token"])
        assert (await fresh(base, "DELETE", unknown_session, headers=access)).status_code == 404
        assert (await fresh(base, "GET", "/no/such/path")).status_code == 404
        for _ in range(20):  # more connections: both workers surely take some
            assert (await fresh(base, "GET", "/health")).status_code == 200

        scrapes = []
        for _ in range(6):
            response = await fresh(base, "GET", "/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            scrapes.append(parse(response.text))

    access_lines = [json.loads(line) for line in server.stdout if '"hypercorn.access"' in line]
    assert len({line["pid"] for line in access_lines}) == WORKERS
    # Whichever worker answered, the same sums.
    assert all(auth_samples(scrape) == auth_samples(scrapes[0]) for scrape in scrapes)
    samples = scrapes[-1]

    assert {
        outcome: value(samples, "auth_logins_total", outcome=outcome)
        for outcome in ("success", "invalid_credentials", "throttled", "account_disabled")
    } == {
        "success": GOOD_LOGINS,
        "invalid_credentials": BAD_LOGINS,
        "throttled": 1,
        "account_disabled": 0,
    }
    assert {
        kind: value(samples, "auth_tokens_issued_total", type=kind)
        for kind in ("access", "refresh", "client_credentials")
    } == {"access": GOOD_LOGINS + 1, "refresh": GOOD_LOGINS + 1, "client_credentials": 1}
    assert value(samples, "auth_refresh_reuse_total") == 1
    assert value(samples, "auth_throttled_total", event="login") == 1
    assert value(samples, "auth_events_total", event="signup", outcome="ok") == SIGNUPS
    # Each worker hashes once at start-up (the dummy hash for unknown users).
    hashes = value(samples, "auth_password_hash_seconds_count", operation="hash")
    assert hashes == SIGNUPS + WORKERS
    verifications = value(samples, "auth_password_hash_seconds_count", operation="verify")
    assert verifications == GOOD_LOGINS + BAD_LOGINS
    assert value(samples, "auth_hash_queue_depth") == 0

    assert requests(samples, "/signup", "POST", 201) == SIGNUPS
    assert requests(samples, "/login", "POST", 200) == GOOD_LOGINS
    assert requests(samples, "/login", "POST", 401) == BAD_LOGINS
    assert requests(samples, "/login", "POST", 429) == 1
    assert requests(samples, "/refresh", "POST", 200) == 1
    assert requests(samples, "/refresh", "POST", 401) == 1
    assert requests(samples, "/token", "POST", 200) == 1
    assert requests(samples, "/sessions/<uuid:session_id>", "DELETE", 404) == 1
    assert requests(samples, UNMATCHED_ROUTE, "GET", 404) == 1
    routes = {dict(labels).get("route") for name, labels in samples if name.startswith("http_")}
    assert not any(route and ("/no/" in route or unknown_session in route) for route in routes)

    # The supervisor removed the directory when it ended.
    assert server.process.returncode == 0
    assert list(temporary.glob(f"{METRICS_DIRECTORY_PREFIX}*")) == []
