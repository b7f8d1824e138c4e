"""python -m service users create / set-roles / disable, on the same AUTH_* environment."""

from __future__ import annotations

import getpass
import io
import json
import sys
from pathlib import Path

import pytest

from service.ops.cli import main
from tests.commands import InProcessCommand
from tests.servers import free_port
from tests.support import PASSWORD, make_settings, running_app

CREATE_BOB = ["users", "create", "bob", "--email", "b@x.io"]


def run_main(argv: list[str]) -> int:
    """``main(argv)`` in this process; an escaping Ctrl-C fails the test, not the whole run."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main()")


class TerminalInput(io.StringIO):
    """Standard input that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The AUTH_* environment of the in-process commands: testing, a database in tmp_path."""
    monkeypatch.chdir(tmp_path)  # no developer's .env
    monkeypatch.setenv("AUTH_ENV", "testing")
    monkeypatch.setenv("AUTH_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}")
    monkeypatch.setenv("AUTH_ARGON2_MEMORY_COST", "1024")
    monkeypatch.setenv("AUTH_ARGON2_TIME_COST", "1")
    return tmp_path


async def test_users_create_then_log_in_over_http(
    tmp_path: Path, service_command: InProcessCommand
) -> None:
    created = await service_command(
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

    async with running_app(make_settings(tmp_path)) as app:
        response = await app.test_client().post(
            "/login", json={"username": "root", "password": PASSWORD}
        )
    assert response.status_code == 200


async def test_users_create_refuses_a_weak_password_and_a_duplicate(
    service_command: InProcessCommand,
) -> None:
    weak = await service_command(
        "users", "create", "bob", "--email", "b@x.io", "--password-stdin", stdin="short\n"
    )
    first = await service_command(
        "users",
        "create",
        "bob",
        "--email",
        "b@x.io",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    again = await service_command(
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


async def test_set_roles_and_disable(tmp_path: Path, service_command: InProcessCommand) -> None:
    created = await service_command(
        "users",
        "create",
        "bob",
        "--email",
        "b@x.io",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )

    roles = await service_command("users", "set-roles", "bob", "admin", "auditor")
    disabled = await service_command("users", "disable", "bob")
    missing = await service_command("users", "disable", "nobody")

    assert created.returncode == 0, created.stderr
    assert json.loads(roles.stdout)["roles"] == ["admin", "auditor"]
    assert json.loads(disabled.stdout)["is_active"] is False
    assert missing.returncode == 1
    async with running_app(make_settings(tmp_path)) as app:
        response = await app.test_client().post(
            "/login", json={"username": "bob", "password": PASSWORD}
        )
    assert response.status_code == 401


# Asking for the password: asyncio.run inside main() needs a test without a running loop.


def test_users_create_without_a_terminal_asks_for_password_stdin(
    environment: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))

    code = run_main(CREATE_BOB)

    captured = capsys.readouterr()
    assert code == 1
    assert captured.err == "error: no terminal to read the password from; use --password-stdin\n"
    assert captured.out == ""
    assert not (environment / "auth.db").exists()


@pytest.mark.parametrize(
    ("typed", "message", "exit_code"),
    [(EOFError, "error: no password given\n", 1), (KeyboardInterrupt, "error: interrupted\n", 130)],
    ids=["ctrl-d", "ctrl-c"],
)
def test_users_create_stopped_at_the_password_prompt_says_so_in_one_line(
    environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    typed: type[BaseException],
    message: str,
    exit_code: int,
) -> None:
    def prompt(prompt: str = "Password: ", stream: object = None) -> str:
        raise typed

    monkeypatch.setattr(sys, "stdin", TerminalInput(""))
    monkeypatch.setattr(getpass, "getpass", prompt)

    code = run_main(CREATE_BOB)

    captured = capsys.readouterr()
    assert code == exit_code
    assert captured.err == message
    assert captured.out == ""


def test_users_create_reads_the_password_twice_from_the_terminal(
    environment: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts: list[str] = []

    def prompt(prompt: str = "Password: ", stream: object = None) -> str:
        prompts.append(prompt)
        return PASSWORD

    monkeypatch.setattr(sys, "stdin", TerminalInput(""))
    monkeypatch.setattr(getpass, "getpass", prompt)

    code = run_main(CREATE_BOB)

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert prompts == ["Password: ", "Repeat password: "]
    assert json.loads(captured.out)["username"] == "bob"
    assert captured.err == ""


@pytest.mark.parametrize("args", [["db", "upgrade"], ["users", "disable", "bob"]])
def test_an_unreachable_database_says_so_in_one_line(
    environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
) -> None:
    # Nothing listens on that port: the connection is refused at once.
    url = f"postgresql+asyncpg://postgres:s3cret@127.0.0.1:{free_port()}/auth"
    monkeypatch.setenv("AUTH_DATABASE_URL", url)

    code = run_main(args)

    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("error: the database at postgresql+asyncpg://postgres:***@")
    assert "cannot be used: " in captured.err
    assert "s3cret" not in captured.err
