"""Settings from AUTH_* variables, the JWT secret rules, and a clean exit on bad configuration."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from service.core.config import (
    MIN_SECRET_BYTES,
    SECRET_FILE_NAME,
    ConfigError,
    Settings,
    load_settings,
    resolve_jwt_secret,
)
from service.store.db import Database
from tests.servers import clean_env, run_python
from tests.support import PASSWORD, make_settings, running_app

# --- resolve_jwt_secret -------------------------------------------------------------------------


def test_production_without_secret_is_a_config_error(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, env="production")

    with pytest.raises(ConfigError, match="AUTH_JWT_SECRET"):
        resolve_jwt_secret(settings)

    assert not (settings.instance_path / SECRET_FILE_NAME).exists()


@pytest.mark.parametrize("env", ["production", "development", "testing"])
@pytest.mark.parametrize(
    "secret",
    [
        "x" * (MIN_SECRET_BYTES - 1),
        "\u00e9" * 15 + "a",  # 16 characters but 31 bytes
        "",
    ],
)
def test_secret_shorter_than_32_bytes_is_a_config_error(
    tmp_path: Path, env: str, secret: str
) -> None:
    settings = make_settings(tmp_path, env=env, jwt_secret=secret)

    with pytest.raises(ConfigError, match="AUTH_JWT_SECRET") as caught:
        resolve_jwt_secret(settings)

    assert "\n" not in str(caught.value)
    assert secret == "" or secret not in str(caught.value)


@pytest.mark.parametrize(
    "secret",
    ["x" * MIN_SECRET_BYTES, "\u00e9" * 16, "s3cr3t-" * 20],
)
def test_production_secret_of_32_bytes_or_more_is_used_as_given(
    tmp_path: Path, secret: str
) -> None:
    assert len(secret.encode()) >= MIN_SECRET_BYTES
    settings = make_settings(tmp_path, env="production", jwt_secret=secret)

    assert resolve_jwt_secret(settings) == secret.encode()
    assert not settings.instance_path.exists()


def test_development_generates_a_secret_file_once_and_reuses_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, env="development")
    secret_file = settings.instance_path / SECRET_FILE_NAME
    assert not secret_file.exists()

    first = resolve_jwt_secret(settings)

    assert len(first) >= MIN_SECRET_BYTES
    assert secret_file.read_bytes().strip() == first
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert sorted(os.listdir(settings.instance_path)) == [SECRET_FILE_NAME]

    second = resolve_jwt_secret(make_settings(tmp_path, env="development"))

    assert second == first
    assert secret_file.read_bytes().strip() == first


def test_development_uses_an_existing_secret_file(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, env="development")
    settings.instance_path.mkdir()
    existing = b"k" * 40
    (settings.instance_path / SECRET_FILE_NAME).write_bytes(existing + b"\n")

    assert resolve_jwt_secret(settings) == existing


def test_development_refuses_a_short_secret_file(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, env="development")
    settings.instance_path.mkdir()
    (settings.instance_path / SECRET_FILE_NAME).write_bytes(b"too short\n")

    with pytest.raises(ConfigError, match=SECRET_FILE_NAME):
        resolve_jwt_secret(settings)


@pytest.mark.parametrize(
    ("instance", "reason"),
    [("a-file", "is not a folder"), ("a-file/instance", "Not a directory")],
    ids=["a-file", "under-a-file"],
)
def test_development_refuses_an_instance_path_that_is_no_folder_in_one_line(
    tmp_path: Path, instance: str, reason: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    settings = make_settings(tmp_path, env="development", instance_path=tmp_path / instance)

    with pytest.raises(ConfigError) as caught:
        resolve_jwt_secret(settings)

    message = str(caught.value)
    assert message.startswith(f"AUTH_INSTANCE_PATH={tmp_path / instance}")
    assert message.endswith(reason)
    assert "\n" not in message


def test_testing_generates_a_secret_without_writing_a_file(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, env="testing")

    secret = resolve_jwt_secret(settings)

    assert len(secret) >= MIN_SECRET_BYTES
    assert not settings.instance_path.exists()
    assert list(tmp_path.iterdir()) == []


# --- load_settings ------------------------------------------------------------------------------


def test_load_settings_reads_auth_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTH_ENV", "production")
    monkeypatch.setenv("AUTH_JWT_SECRET", "z" * 40)
    monkeypatch.setenv("AUTH_ACCESS_TOKEN_TTL", "60")
    monkeypatch.setenv("AUTH_REFRESH_TOKEN_TTL", "3600")
    monkeypatch.setenv("AUTH_JWT_ISSUER", "https://issuer.example")
    monkeypatch.setenv("AUTH_JWT_AUDIENCE", "api.example")
    monkeypatch.setenv("AUTH_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("AUTH_AUTO_MIGRATE", "false")
    monkeypatch.setenv("JWT_ISSUER", "ignored-without-prefix")

    settings = load_settings()

    assert settings.env == "production"
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == "z" * 40
    assert "z" * 40 not in repr(settings)
    assert settings.access_token_ttl == 60
    assert settings.refresh_token_ttl == 3600
    assert settings.jwt_issuer == "https://issuer.example"
    assert settings.jwt_audience == "api.example"
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    assert settings.auto_migrate is False
    assert resolve_jwt_secret(settings) == b"z" * 40


def test_load_settings_defaults_without_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    settings = load_settings()

    assert settings.env == "development"
    assert settings.jwt_secret is None
    assert settings.access_token_ttl == 900
    assert settings.refresh_token_ttl == 1_209_600


def test_load_settings_reads_dotenv_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("AUTH_JWT_ISSUER=from-dotenv\nAUTH_JWT_AUDIENCE=from-dotenv\n")
    monkeypatch.setenv("AUTH_JWT_AUDIENCE", "from-environment")

    settings = load_settings()

    assert settings.jwt_issuer == "from-dotenv"
    assert settings.jwt_audience == "from-environment"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTH_ENV", "staging"),
        ("AUTH_ACCESS_TOKEN_TTL", "-1"),
        ("AUTH_ACCESS_TOKEN_TTL", "0"),
        ("AUTH_ACCESS_TOKEN_TTL", "fifteen minutes"),
        ("AUTH_REFRESH_TOKEN_TTL", "-1"),
        ("AUTH_JWT_ALGORITHM", "none"),
        ("AUTH_JWT_LEEWAY", "3600"),
        ("AUTH_DATABASE_URL", "sqlite:///./instance/auth.db"),
        ("AUTH_DATABASE_URL", "sqlite+aiosqlite://"),
        ("AUTH_DATABASE_URL", "sqlite+aiosqlite:///:memory:"),
        ("AUTH_DATABASE_URL", "sqlite+aiosqlite:///file::memory:?cache=shared&uri=true"),
    ],
)
def test_load_settings_turns_a_bad_value_into_a_one_line_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ is True


def test_load_settings_names_every_bad_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTH_ENV", "staging")
    monkeypatch.setenv("AUTH_ACCESS_TOKEN_TTL", "-1")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    message = str(caught.value)
    assert "AUTH_ENV: " in message
    assert "AUTH_ACCESS_TOKEN_TTL: " in message
    assert "\n" not in message


# --- the database file ---------------------------------------------------------------------------

DATABASE_FILES = ("auth.db", "auth.db-wal", "auth.db-shm")


def modes(folder: Path) -> dict[str, int]:
    return {
        name: stat.S_IMODE((folder / name).stat().st_mode)
        for name in DATABASE_FILES
        if (folder / name).exists()
    }


async def test_the_database_files_are_created_for_the_owner_only(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path)) as app:
        signup = await app.test_client().post(
            "/signup", json={"username": "alice", "email": "a@x.io", "password": PASSWORD}
        )
        while_serving = modes(tmp_path)

    assert signup.status_code == 201
    # Password hashes and emails, also in the write-ahead log until it is checkpointed.
    assert while_serving == {name: 0o600 for name in DATABASE_FILES}


async def test_an_existing_database_file_readable_by_others_is_narrowed(tmp_path: Path) -> None:
    database = tmp_path / "auth.db"
    sqlite3.connect(database).close()
    database.chmod(0o644)

    async with running_app(make_settings(tmp_path)) as app:
        signup = await app.test_client().post(
            "/signup", json={"username": "alice", "email": "a@x.io", "password": PASSWORD}
        )
        while_serving = modes(tmp_path)

    assert signup.status_code == 201
    assert while_serving == {name: 0o600 for name in DATABASE_FILES}


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("a-file/auth.db", "AUTH_DATABASE_URL: {tmp}/a-file is not a folder"),
        ("a-file/data/auth.db", "AUTH_DATABASE_URL: cannot create the folder {tmp}/a-file/data"),
        ("a-folder", "AUTH_DATABASE_URL: cannot open {tmp}/a-folder for writing"),
    ],
    ids=["under-a-file", "deeper-under-a-file", "a-folder"],
)
def test_a_database_path_that_cannot_be_a_file_is_a_one_line_config_error(
    tmp_path: Path, location: str, message: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "a-folder").mkdir()
    settings = make_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / location}")

    with pytest.raises(ConfigError) as caught:
        Database(settings)

    assert str(caught.value).startswith(message.format(tmp=tmp_path))
    assert "\n" not in str(caught.value)


# --- start-up -----------------------------------------------------------------------------------


def start_app(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    return run_python("-c", "import service.asgi", cwd=tmp_path, env=clean_env(**variables))


@pytest.mark.slow
def test_production_start_without_secret_exits_with_one_line(tmp_path: Path) -> None:
    result = start_app(tmp_path, AUTH_ENV="production")

    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "AUTH_JWT_SECRET" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "instance" / SECRET_FILE_NAME).exists()


@pytest.mark.slow
def test_production_start_with_a_short_secret_exits_with_one_line(tmp_path: Path) -> None:
    result = start_app(tmp_path, AUTH_ENV="production", AUTH_JWT_SECRET="x" * 31)

    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "AUTH_JWT_SECRET" in lines[0]
    assert "x" * 31 not in result.stderr


@pytest.mark.slow
def test_start_with_a_bad_variable_exits_with_one_line(tmp_path: Path) -> None:
    result = start_app(tmp_path, AUTH_ENV="staging")

    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "AUTH_ENV" in lines[0]


@pytest.mark.parametrize(
    ("setting", "origins"),
    [
        ("", ()),
        ("*", ("*",)),
        (
            " https://App.Example:443/ , http://localhost:5173",
            ("https://app.example", "http://localhost:5173"),
        ),
        (
            "http://a.example:80,https://b.example:8443",
            ("http://a.example", "https://b.example:8443"),
        ),
    ],
)
def test_cors_origins_are_kept_as_a_browser_sends_them(
    setting: str, origins: tuple[str, ...]
) -> None:
    assert Settings(cors_origins=setting).cors_origin_list == origins


@pytest.mark.parametrize(
    "setting",
    [
        "ftp://a.example",
        "https://a.example/app",
        "https://a.example?x=1",
        "a.example",
        "*,https://a.example",
        "https://user@a.example",
    ],
)
def test_a_cors_entry_that_is_not_an_origin_is_one_line_naming_the_variable(
    setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings_from(monkeypatch, {"AUTH_CORS_ORIGINS": setting})
    message = str(raised.value)
    assert message.startswith("AUTH_CORS_ORIGINS: ")
    assert "\n" not in message


@pytest.mark.parametrize("variable", ["AUTH_PUBLIC_URL", "AUTH_JWKS_URL", "AUTH_INTROSPECTION_URL"])
@pytest.mark.parametrize("value", ["ftp://a.example/x", "not a url", "https://a.example/#frag"])
def test_a_url_setting_that_is_not_http_is_one_line(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings_from(monkeypatch, {variable: value})
    assert str(raised.value).startswith(f"{variable}: ")


def test_the_public_url_loses_its_trailing_slash() -> None:
    assert Settings(public_url="https://auth.example/").public_url == "https://auth.example"


def load_settings_from(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> Settings:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return load_settings()
