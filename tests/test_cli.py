"""python -m service users create / set-roles / disable, on the same AUTH_* environment."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from service.app import create_app
from tests.servers import run_service_command
from tests.support import PASSWORD, make_settings


def cli(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_service_command(tmp_path, *args, stdin=stdin)


async def test_users_create_then_log_in_over_http(tmp_path: Path) -> None:
    created = cli(
        tmp_path,
        "users",
        "create",
        "root",
        "--email",
        "Root@X.io",
        "--role",
        "admin",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert created.returncode == 0, created.stderr
    user = json.loads(created.stdout)
    assert user["username"] == "root"
    assert user["email"] == "root@x.io"
    assert user["roles"] == ["admin"]

    app = create_app(make_settings(tmp_path))
    async with app.test_app():
        response = await app.test_client().post(
            "/login", json={"username": "root", "password": PASSWORD}
        )
    assert response.status_code == 200


async def test_users_create_refuses_a_weak_password_and_a_duplicate(tmp_path: Path) -> None:
    weak = cli(
        tmp_path, "users", "create", "bob", "--email", "b@x.io", "--password-stdin", stdin="short\n"
    )
    first = cli(
        tmp_path,
        "users",
        "create",
        "bob",
        "--email",
        "b@x.io",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    again = cli(
        tmp_path,
        "users",
        "create",
        "BOB",
        "--email",
        "c@x.io",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )

    assert weak.returncode == 1
    assert "password" in weak.stderr
    assert first.returncode == 0
    assert again.returncode == 1
    assert "taken" in again.stderr


async def test_set_roles_and_disable(tmp_path: Path) -> None:
    cli(
        tmp_path,
        "users",
        "create",
        "bob",
        "--email",
        "b@x.io",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )

    roles = cli(tmp_path, "users", "set-roles", "bob", "admin", "auditor")
    disabled = cli(tmp_path, "users", "disable", "bob")
    missing = cli(tmp_path, "users", "disable", "nobody")

    assert json.loads(roles.stdout)["roles"] == ["admin", "auditor"]
    assert json.loads(disabled.stdout)["is_active"] is False
    assert missing.returncode == 1
    app = create_app(make_settings(tmp_path))
    async with app.test_app():
        response = await app.test_client().post(
            "/login", json={"username": "bob", "password": PASSWORD}
        )
    assert response.status_code == 401
