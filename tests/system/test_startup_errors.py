"""A server that cannot start says why in one line on stderr and exits non-zero, no traceback:
under ``hypercorn -c hypercorn.toml service.asgi:app``, ``python -m service.serve`` and
``scripts/serve``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.servers import ROOT, clean_env, free_port, run_python

Command = Callable[[int], list[str]]

# Every test starts a real server process.
pytestmark = pytest.mark.slow


def hypercorn(port: int) -> list[str]:
    return ["-m", "hypercorn", "-c", str(ROOT / "hypercorn.toml"), "--bind", f"127.0.0.1:{port}"]


def service_serve(port: int) -> list[str]:
    return ["-m", "service.serve", "--workers", "2", "--bind", f"127.0.0.1:{port}"]


COMMANDS = pytest.mark.parametrize(
    "command",
    [pytest.param(hypercorn, id="hypercorn"), pytest.param(service_serve, id="service.serve")],
)


def the_one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def start(tmp_path: Path, argv: list[str], **variables: str) -> str:
    """Start the server in ``tmp_path``; the one line it fails with."""
    return the_one_line(run_python(*argv, cwd=tmp_path, env=clean_env(**variables)))


@contextmanager
def listener(port: int, *, reuse_port: bool = False) -> Iterator[None]:
    """Something else listening on ``port``: a plain server, or (reuse_port) one that lets
    processes of the same user join its port with SO_REUSEPORT, as python -m service.serve's
    workers do."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` refuses new files for the block."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    # root writes through permission bits; an immutable folder refuses it too.
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", folder], check=False).returncode != 0:
        pytest.skip("running as root, and chattr +i is not supported here")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", folder], check=True)


# --- the port -----------------------------------------------------------------------------------


def test_service_serve_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    with listener(port):
        line = start(tmp_path, service_serve(port), AUTH_ENV="testing")

    assert line == f"auth-service: cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
def test_service_serve_refuses_a_port_another_reuse_port_server_holds(tmp_path: Path) -> None:
    # Its per-worker sockets set SO_REUSEPORT, which would let them join that server's port
    # silently and have the kernel split the connections between the two services.
    port = free_port()
    with listener(port, reuse_port=True):
        line = start(tmp_path, service_serve(port), AUTH_ENV="testing")

    assert line == f"auth-service: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_scripts_serve_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(
        AUTH_ENV="testing",
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        AUTH_INSTANCE_PATH=str(tmp_path / "instance"),
    )
    with listener(port):
        result = subprocess.run(
            [str(ROOT / "scripts" / "serve"), "--bind", f"127.0.0.1:{port}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    line = the_one_line(result)
    assert line == f"auth-service: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_service_serve_with_an_unreadable_config_says_so_in_one_line(tmp_path: Path) -> None:
    argv = [*service_serve(free_port()), "--config", "missing.toml"]

    line = start(tmp_path, argv, AUTH_ENV="testing")

    assert line == "auth-service: cannot read missing.toml: No such file or directory"


def test_service_serve_with_an_app_that_does_not_exist_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    line = start(tmp_path, [*service_serve(free_port()), "tests.no_such_app:app"])

    assert line.startswith("auth-service: Cannot load application from 'tests.no_such_app:app'")


# --- the instance folder ------------------------------------------------------------------------


@COMMANDS
def test_a_read_only_database_folder_says_so_in_one_line(tmp_path: Path, command: Command) -> None:
    folder = tmp_path / "instance"  # where the default AUTH_DATABASE_URL keeps auth.db
    folder.mkdir()
    with read_only(folder):
        line = start(tmp_path, [*command(free_port()), "service.asgi:app"], AUTH_ENV="testing")

    assert line == (
        "auth-service: configuration error: AUTH_DATABASE_URL: the folder instance is read-only "
        "(SQLite writes the database's -wal and -shm files there)"
    )
    assert list(folder.iterdir()) == []


@COMMANDS
def test_a_read_only_secret_folder_says_so_in_one_line(tmp_path: Path, command: Command) -> None:
    folder = tmp_path / "instance"  # where development keeps the JWT secret it generates
    folder.mkdir()
    with read_only(folder):
        line = start(
            tmp_path,
            [*command(free_port()), "service.asgi:app"],
            AUTH_ENV="development",
            AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'data' / 'auth.db'}",
        )

    assert line.startswith(
        "auth-service: configuration error: AUTH_INSTANCE_PATH=instance: "
        "cannot keep the JWT secret jwt_secret there: "
    )


@COMMANDS
@pytest.mark.parametrize(
    ("instance_path", "message"),
    [
        ("a-file", "AUTH_INSTANCE_PATH=a-file is not a folder"),
        (
            "a-file/instance",
            "AUTH_INSTANCE_PATH=a-file/instance: cannot keep the JWT secret jwt_secret there: "
            "Not a directory",
        ),
    ],
    ids=["a-file", "under-a-file"],
)
def test_an_instance_path_that_is_no_folder_says_so_in_one_line(
    tmp_path: Path, command: Command, instance_path: str, message: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")

    line = start(
        tmp_path,
        [*command(free_port()), "service.asgi:app"],
        AUTH_ENV="development",
        AUTH_INSTANCE_PATH=instance_path,
    )

    assert line == f"auth-service: configuration error: {message}"


# --- the database URL ---------------------------------------------------------------------------


@COMMANDS
@pytest.mark.parametrize("url", ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"])
def test_an_in_memory_database_is_refused_in_one_line(
    tmp_path: Path, command: Command, url: str
) -> None:
    line = start(
        tmp_path,
        [*command(free_port()), "service.asgi:app"],
        AUTH_ENV="testing",
        AUTH_DATABASE_URL=url,
    )

    assert line == (
        "auth-service: configuration error: AUTH_DATABASE_URL: Value error, an in-memory SQLite "
        "database is not supported; use a file, e.g. sqlite+aiosqlite:///./instance/auth.db"
    )


@COMMANDS
def test_under_json_logs_the_one_line_is_a_json_object(tmp_path: Path, command: Command) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")

    line = start(
        tmp_path,
        [*command(free_port()), "service.asgi:app"],
        AUTH_ENV="development",
        AUTH_INSTANCE_PATH="a-file",
        AUTH_LOG_FORMAT="json",
    )

    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["message"] == "configuration error: AUTH_INSTANCE_PATH=a-file is not a folder"
