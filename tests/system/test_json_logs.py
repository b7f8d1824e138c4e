"""AUTH_LOG_FORMAT=json on a real python -m service.serve, and on plain ``hypercorn -c
hypercorn.toml`` (the contract's way to serve): every line it writes (stdout and stderr, every
process) is one JSON object, requests carry their id, and no secret of a full flow appears
anywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import clean_env, run_python
from tests.supervised import supervised_server
from tests.support import bearer

pytestmark = pytest.mark.slow

PASSWORD = "Json-Logs-Password-7c1e"
NEW_PASSWORD = "Json-Logs-New-Password-4b9a"
LOGIN_REQUEST_ID = "json-logs-login-1"


def secrets_of(*tokens: str) -> list[str]:
    """Each token whole and, for a JWT, its signature alone."""
    found = []
    for token in tokens:
        found.append(token)
        if token.count(".") == 2:
            found.append(token.rsplit(".", 1)[1])
    return found


@pytest.mark.parametrize("server_kind", ["service.serve", "hypercorn"])
async def test_every_log_line_is_json_with_its_request_id_and_no_secret(
    tmp_path: Path, server_kind: str
) -> None:
    env = clean_env(
        AUTH_ENV="testing",
        AUTH_JWT_SECRET="j" * 48,
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
        AUTH_LOG_FORMAT="json",
    )
    created = run_python("-m", "service", "clients", "create", "reporting", cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    machine = json.loads(created.stdout)

    async with (
        supervised_server(
            tmp_path, env, workers=2, plain_hypercorn=server_kind == "hypercorn"
        ) as server,
        httpx.AsyncClient(base_url=server.base) as client,
    ):
        signup = {"username": "jason", "email": "jason@example.com", "password": PASSWORD}
        assert (await client.post("/signup", json=signup)).status_code == 201
        wrong = await client.post("/login", json={"username": "jason", "password": "nope-nope"})
        assert wrong.status_code == 401
        login = await client.post(
            "/login",
            json={"username": "jason", "password": PASSWORD},
            headers={"X-Request-ID": LOGIN_REQUEST_ID},
        )
        assert login.status_code == 200
        first = login.json()
        refreshed = await client.post("/refresh", headers=bearer(first["refresh_token"]))
        assert refreshed.status_code == 200
        second = refreshed.json()
        change = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        changed = await client.post(
            "/me/password", json=change, headers=bearer(first["access_token"])
        )
        assert changed.status_code == 204
        granted = await client.post(
            "/token",
            data={"grant_type": "client_credentials"},
            auth=(machine["client_id"], machine["client_secret"]),
        )
        assert granted.status_code == 200
        machine_token = granted.json()["access_token"]
        assert (await client.get("/no/such/page?token=" + PASSWORD)).status_code == 404

    lines = [line for line in server.lines() if line.strip()]
    records: list[dict[str, Any]] = []
    for line in lines:
        record = json.loads(line)  # every line, whatever wrote it
        assert isinstance(record, dict), line
        records.append(record)

    secrets = [
        PASSWORD,
        NEW_PASSWORD,
        machine["client_secret"],
        *secrets_of(
            first["access_token"],
            first["refresh_token"],
            second["access_token"],
            second["refresh_token"],
            machine_token,
        ),
    ]
    output = "\n".join(lines)
    assert [secret for secret in secrets if secret in output] == []

    access = [r for r in records if r.get("logger") == "hypercorn.access"]
    assert {(r["method"], r["path"], r["status"]) for r in access} >= {
        ("POST", "/signup", 201),
        ("POST", "/login", 401),
        ("POST", "/login", 200),
        ("POST", "/refresh", 200),
        ("POST", "/me/password", 204),
        ("POST", "/token", 200),
        ("GET", "/no/such/page", 404),
    }
    assert all(r["request_id"] for r in access)
    assert all(r["remote_addr"] == "127.0.0.1" and r["protocol"] == "1.1" for r in access)
    assert all(isinstance(r["duration_us"], int) for r in access)
    assert all(r["bytes"] is not None for r in access if r["status"] != 204)
    (login_line,) = [r for r in access if r["request_id"] == LOGIN_REQUEST_ID]
    assert (login_line["path"], login_line["status"]) == ("/login", 200)

    audit = [r for r in records if "event" in r]
    assert {(r["event"], r["outcome"]) for r in audit} >= {
        ("signup", "ok"),
        ("login", "failed"),
        ("login", "ok"),
        ("refresh", "ok"),
        ("password-change", "ok"),
        ("client-token", "ok"),
    }
    assert all(r["request_id"] for r in audit)
    assert [r["request_id"] for r in audit if r["event"] == "login" and r["outcome"] == "ok"] == [
        LOGIN_REQUEST_ID
    ]

    loggers = {r.get("logger") for r in records}
    # The supervisor's own lines (service.serve) under it; hypercorn's start-up line in both.
    expected = {"hypercorn.error", "service.serve"} if server_kind == "service.serve" else set()
    assert expected | {"hypercorn.error"} <= loggers
    server_lines = [r["message"] for r in records if r.get("logger") == "hypercorn.error"]
    assert any("Running on" in message for message in server_lines)
    assert all("request_id" in r for r in records if r.get("logger", "").startswith("service"))
