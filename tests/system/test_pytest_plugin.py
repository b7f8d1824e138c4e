"""The pytest plugin: idle unless enabled (checked in real pytest runs), and what it mints."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from quart import Quart

from service.accounts.hooks import AuthHooks
from service.store.models import User
from service.testing.plugin import (
    DEFAULT_PASSWORD,
    AuthUser,
    TokenMinter,
    UserMaker,
    client_with_token,
    isolated_settings,
)
from service.web.state import get_state
from tests.support import Client, bearer, running_app

# --- opt-in: real pytest sessions in temporary projects ---------------------------------------

IDLE_PROBE = """
import sys


def test_the_plugin_is_loaded_but_idle(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("auth_service")
    assert not pytestconfig.pluginmanager.has_plugin("auth_service_fixtures")
    assert "quart" not in sys.modules
    assert "service.web.app" not in sys.modules
"""

ENABLED_PROBE = """
def test_the_fixtures_are_registered(pytestconfig, auth_settings, tmp_path):
    assert pytestconfig.pluginmanager.has_plugin("auth_service_fixtures")
    assert auth_settings.env == "testing"
    assert str(tmp_path) in auth_settings.database_url
"""

# Strict asyncio mode (the default): the plugin's async fixtures must not rely on auto mode.
SERVICE_PROBE = """
import pytest


@pytest.mark.asyncio
async def test_the_fixtures_drive_the_service(auth_client, authed_client, auth_user, mint_token,
                                              bearer_client):
    assert (await auth_client.get("/health")).status_code == 200
    me = await authed_client.get("/me")
    assert (await me.get_json())["username"] == auth_user.username
    expired = bearer_client(await mint_token(auth_user, expired=True))
    assert (await (await expired.get("/me")).get_json())["code"] == "TOKEN_EXPIRED"
"""

ENABLING_CONFTEST = """
from service.testing.plugin import enable


def pytest_configure(config):
    enable(config)
"""


# The README's mistake: the override returns an app where a settings -> app factory belongs.
APP_NOT_FACTORY_CONFTEST = """
import pytest
from quart import Quart


@pytest.fixture
def auth_app_factory():
    return Quart("mine")
"""


@dataclass(frozen=True)
class Run:
    returncode: int
    output: str


def _project(directory: Path, *, ini: str = "", conftest: str | None = None) -> Path:
    directory.mkdir()
    (directory / "pytest.ini").write_text(
        f"[pytest]\nasyncio_default_fixture_loop_scope = function\n{ini}\n"
    )
    probes = {"idle": IDLE_PROBE, "enabled": ENABLED_PROBE, "service": SERVICE_PROBE}
    for name, source in probes.items():
        (directory / f"test_{name}.py").write_text(textwrap.dedent(source))
    if conftest is not None:
        (directory / "conftest.py").write_text(textwrap.dedent(conftest))
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Six pytest sessions, run side by side; only one starts the service (the slow part)."""
    root = tmp_path_factory.mktemp("plugin")
    scenarios = {
        "off": (_project(root / "off"), ["test_idle.py", "test_enabled.py"]),
        "help": (_project(root / "help"), ["--help"]),
        "flag": (_project(root / "flag"), ["--auth-service", "test_enabled.py", "test_service.py"]),
        "ini": (_project(root / "ini", ini="auth_service_plugin = true"), ["test_enabled.py"]),
        "conftest": (_project(root / "conftest", conftest=ENABLING_CONFTEST), ["test_enabled.py"]),
        "app-not-factory": (
            _project(root / "app-not-factory", conftest=APP_NOT_FACTORY_CONFTEST),
            ["--auth-service", "test_service.py"],
        ),
    }
    # The plugin must be found through its entry point, as in any project that installs us:
    # `-p auth_service` names the entry point. The other installed plugins (schemathesis,
    # hypothesis, playwright, xdist) are not loaded: they cost each session ~2 s of start-up.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AUTH_"))}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    entry_points = ["-p", "auth_service", "-p", "asyncio"]
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *entry_points, "-q", *args],
            cwd=directory,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, (directory, args) in scenarios.items()
    }
    results = {}
    for name, process in processes.items():
        output, _ = process.communicate(timeout=120)
        results[name] = Run(process.returncode, output)
    return results


def test_without_opting_in_the_plugin_is_idle_and_its_fixtures_unknown(
    runs: dict[str, Run],
) -> None:
    run = runs["off"]

    assert run.returncode == 1, run.output
    assert "fixture 'auth_settings' not found" in run.output
    # The idle probe passed: loaded, no fixtures registered, nothing of the service imported.
    assert "1 passed, 1 error" in run.output


def test_an_app_factory_override_that_returns_an_app_is_told_what_to_return(
    runs: dict[str, Run],
) -> None:
    run = runs["app-not-factory"]

    assert run.returncode == 1, run.output
    assert "auth_app_factory must return a factory (settings -> app), not an app" in run.output


def test_the_flag_and_the_ini_option_are_documented(runs: dict[str, Run]) -> None:
    assert runs["help"].returncode == 0
    assert "--auth-service" in runs["help"].output
    assert "auth_service_plugin" in runs["help"].output


@pytest.mark.parametrize("way", ["ini", "conftest"])
def test_opting_in_registers_the_fixtures(runs: dict[str, Run], way: str) -> None:
    run = runs[way]

    assert run.returncode == 0, run.output
    assert "1 passed" in run.output


def test_with_the_flag_the_fixtures_drive_the_service_in_strict_asyncio_mode(
    runs: dict[str, Run],
) -> None:
    run = runs["flag"]

    assert run.returncode == 0, run.output
    assert "2 passed" in run.output


# --- the settings ------------------------------------------------------------------------------


def test_isolated_settings_ignore_the_environment_and_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_JWT_ALGORITHM", "RS256")
    monkeypatch.setenv("AUTH_DATABASE_URL", "postgresql+asyncpg://prod/auth")
    (tmp_path / ".env").write_text("AUTH_ACCESS_TOKEN_TTL=5\n")
    monkeypatch.chdir(tmp_path)

    settings = isolated_settings(tmp_path / "db", refresh_reuse_grace_seconds=0)

    assert settings.jwt_algorithm == "HS256"
    assert settings.access_token_ttl == 900
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'db' / 'auth.db'}"
    assert settings.env == "testing"
    assert settings.refresh_reuse_grace_seconds == 0


# --- users and tokens --------------------------------------------------------------------------


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def test_make_user_numbers_users_and_keeps_their_password(app: Quart, client: Client) -> None:
    make_user = UserMaker(get_state(app).accounts)

    first = await make_user()
    second = await make_user(roles=["admin", "clerk"], name="Bo")
    login = await client.post(
        "/login", json={"username": first.username, "password": DEFAULT_PASSWORD}
    )

    assert (first.username, first.email) == ("user1", "user1@example.com")
    assert (second.username, second.roles, second.model.name) == ("user2", ("admin", "clerk"), "Bo")
    assert first.is_active
    assert login.status_code == 200


async def test_make_user_can_make_a_disabled_user(app: Quart, client: Client) -> None:
    disabled = await UserMaker(get_state(app).accounts)(
        "off", password="another password", disabled=True
    )

    login = await client.post("/login", json={"username": "off", "password": "another password"})

    assert not disabled.is_active
    assert login.status_code == 401


async def test_the_default_token_is_a_fresh_login_with_a_live_session(
    app: Quart, client: Client
) -> None:
    user = await UserMaker(get_state(app).accounts)()

    token = await TokenMinter(get_state(app).accounts)(user)
    sessions = await client.get("/sessions", headers=bearer(token))

    claims = claims_of(token)
    assert claims["type"] == "access"
    assert claims["fresh"] is True
    assert sessions.status_code == 200
    [session] = await sessions.get_json()
    assert session["id"] == claims["sid"]
    assert session["current"] is True
    assert session["user_agent"] == "pytest"


async def test_a_minted_refresh_token_rotates_once_and_then_counts_as_reuse(
    tmp_path: Path,
) -> None:
    async with running_app(isolated_settings(tmp_path, refresh_reuse_grace_seconds=0)) as app:
        client = app.test_client()
        user = await UserMaker(get_state(app).accounts)()
        refresh_token = await TokenMinter(get_state(app).accounts)(user, refresh=True)

        rotated = await client.post("/refresh", headers=bearer(refresh_token))
        reused = await client.post("/refresh", headers=bearer(refresh_token))

    assert rotated.status_code == 200
    assert (await reused.get_json())["code"] == "TOKEN_REUSED"


async def test_a_re_signed_refresh_token_still_names_the_live_refresh_jti(
    app: Quart, client: Client
) -> None:
    user = await UserMaker(get_state(app).accounts)()
    mint = TokenMinter(get_state(app).accounts)

    longer = await mint(user, refresh=True, ttl=60)
    expired = await mint(user, refresh=True, expired=True)

    assert claims_of(longer)["exp"] - claims_of(longer)["iat"] == 60
    assert (await client.post("/refresh", headers=bearer(longer))).status_code == 200
    response = await client.post("/refresh", headers=bearer(expired))
    assert (await response.get_json())["code"] == "TOKEN_EXPIRED"


async def test_variants_keep_the_session_and_change_only_what_was_asked(
    app: Quart, client: Client
) -> None:
    user = await UserMaker(get_state(app).accounts)(roles=["clerk"])
    mint = TokenMinter(get_state(app).accounts)

    stale = claims_of(await mint(user, fresh=False))
    old = claims_of(await mint(user, age=600))
    custom = claims_of(await mint(user, roles=["admin"], extra_claims={"tenant": "acme"}))
    not_fresh = await mint(user, fresh=False)

    assert stale["fresh"] is False
    assert "sid" in stale
    assert stale["ver"] == 0
    assert old["fresh"] is True
    assert old["exp"] - old["iat"] == 900
    assert abs(old["iat"] - (time.time() - 600)) <= 2
    assert (custom["roles"], custom["tenant"]) == (["admin"], "acme")
    assert (await client.get("/me", headers=bearer(not_fresh))).status_code == 200
    password = await client.post(
        "/me/password",
        json={"current_password": DEFAULT_PASSWORD, "new_password": "a new password!"},
        headers=bearer(not_fresh),
    )
    assert (await password.get_json())["code"] == "FRESH_TOKEN_REQUIRED"


async def test_an_expired_access_token_is_refused_as_expired(app: Quart, client: Client) -> None:
    user = await UserMaker(get_state(app).accounts)()

    token = await TokenMinter(get_state(app).accounts)(user, expired=True)
    response = await client.get("/me", headers=bearer(token))

    assert (await response.get_json())["code"] == "TOKEN_EXPIRED"


async def test_tokens_follow_the_users_current_version_and_roles(
    app: Quart, client: Client
) -> None:
    state = get_state(app)
    user = await UserMaker(state.accounts)(roles=["admin"])
    before = await TokenMinter(state.accounts)(user)
    await state.accounts.set_roles(user.username, [])  # revokes earlier tokens

    after = await TokenMinter(state.accounts)(user)

    assert (await client.get("/me", headers=bearer(before))).status_code == 401
    assert (await client.get("/me", headers=bearer(after))).status_code == 200
    assert claims_of(after)["roles"] == []
    assert claims_of(after)["ver"] == 1


async def test_a_token_without_a_session_has_no_sid_and_still_passes(
    app: Quart, client: Client
) -> None:
    user = await UserMaker(get_state(app).accounts)()

    token = await TokenMinter(get_state(app).accounts)(user, session=False)
    refresh_token = await TokenMinter(get_state(app).accounts)(user, session=False, refresh=True)

    assert "sid" not in claims_of(token)
    assert (await client.get("/me", headers=bearer(token))).status_code == 200
    refused = await client.post("/refresh", headers=bearer(refresh_token))
    assert refused.status_code == 401


async def test_hook_claims_are_on_every_minted_access_token(tmp_path: Path) -> None:
    async def tenant(user: User) -> dict[str, Any]:
        return {"tenant": "acme"}

    async with running_app(isolated_settings(tmp_path), AuthHooks(tenant)) as app:
        user = await UserMaker(get_state(app).accounts)()
        mint = TokenMinter(get_state(app).accounts)

        tokens = [
            await mint(user),
            await mint(user, fresh=False),
            await mint(user, session=False),
        ]

    assert [claims_of(token)["tenant"] for token in tokens] == ["acme"] * 3


# --- the bearer client -------------------------------------------------------------------------


async def test_the_bearer_client_sends_its_token_unless_told_otherwise(app: Quart) -> None:
    user: AuthUser = await UserMaker(get_state(app).accounts)()
    client = client_with_token(app, await TokenMinter(get_state(app).accounts)(user))

    me = await client.get("/me")
    again = await client.get("/protected")
    overridden = await client.get("/me", headers={"Authorization": "Bearer nonsense"})

    assert (await me.get_json())["username"] == user.username
    assert again.status_code == 200
    assert (await overridden.get_json())["code"] == "TOKEN_INVALID"
