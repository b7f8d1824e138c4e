"""The package as a user gets it: the wheel built from this checkout, installed with its extras
``[client,testing]`` into a fresh virtual environment outside the checkout, migrates with
``auth-service db upgrade``, serves with ``python -m service.serve`` and with ``hypercorn
service.asgi:app`` from folders without a hypercorn.toml, and runs the shop example's tests with
its own pytest plugin.

Nothing of the checkout is importable there: no PYTHONPATH, the working folders are outside it,
and the shop is a copy. pip needs the package index (build isolation fetches setuptools, the
install fetches the dependencies): without it these tests are skipped, except under CI=true,
where that is a failure. Once the index answered, a failing build or install always fails.

The module is one unit for pytest-xdist (tests/scheduling.py): its tests share one build and one
environment, made once per run (about 30-40 s on two cores, most of it pip).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, free_port, wait_for_line, wait_until_up

pytestmark = pytest.mark.slow

IN_CI = os.environ.get("CI") == "true"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
# What the build reads (pyproject.toml's packages, package-dir and readme), copied out so that
# the build's own files (build/, *.egg-info) never land in the checkout.
BUILD_INPUTS = ("pyproject.toml", "README.md", "service", "alembic")
# The checkout's folders and where the wheel carries them (pyproject's package-dir).
PACKAGED_FOLDERS = {"service": "service", "alembic": "service/store/alembic"}
# The variables of this run that must not reach the installed environment's processes.
NOT_INHERITED = ("AUTH_", "PYTHON", "PYTEST_", "VIRTUAL_ENV", "CONDA_")
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Installed:
    """The fresh environment with the wheel installed, and a folder outside the checkout."""

    wheel: Path
    venv: Path
    home: Path  # the working folder of every command run there
    env: dict[str, str]

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return run(list(argv), cwd=cwd or self.home, env=self.env)


def run(
    argv: list[str], *, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def succeeded(result: subprocess.CompletedProcess[str], what: str) -> None:
    output = f"{result.stdout}\n{result.stderr}"[-4000:]
    assert result.returncode == 0, f"{what} exited with {result.returncode}:\n{output}"


def index_unreachable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true requires it: {reason}", pytrace=False)
    pytest.skip(f"{reason}; with CI=true this fails instead")


def environment_of(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    probe = run(
        [*PIP, "download", "--no-deps", "--dest", str(root / "probe"), "setuptools>=77"], cwd=root
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        index_unreachable(f"pip cannot reach the package index ({last})")

    source = root / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = root / "dist"
    built = run([*PIP, "wheel", "--no-deps", "--wheel-dir", str(dist), str(source)], cwd=root)
    succeeded(built, "pip wheel")
    (wheel,) = dist.glob("auth_service-*.whl")

    venv = root / "venv"
    # Without pip of its own (pip from here installs into it: --python); nothing else in it.
    succeeded(run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root), "venv")
    install = [*PIP, "--python", str(venv / "bin" / "python"), "install", "--no-compile"]
    succeeded(run([*install, f"{wheel}[client,testing]"], cwd=root), "pip install")

    home = root / "home"
    home.mkdir()
    return Installed(wheel, venv, home, environment_of(venv))


def test_the_wheel_carries_every_file_of_the_package_and_its_migrations(
    installed: Installed,
) -> None:
    expected = {
        f"{inside}/{path.relative_to(ROOT / folder).as_posix()}"
        for folder, inside in PACKAGED_FOLDERS.items()
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())

    assert sorted(expected - names) == []


def test_the_installed_package_is_imported_not_the_checkout(installed: Installed) -> None:
    probe = installed.run(
        installed.bin("python"),
        "-c",
        "import service, service.store.migrations as m; print(service.__file__); "
        "print(m.script_location())",
    )
    succeeded(probe, "import service")
    package, migrations = probe.stdout.split()

    assert Path(package).is_relative_to(installed.venv), package
    assert Path(migrations).is_relative_to(installed.venv), migrations
    assert not Path(package).is_relative_to(ROOT)


def test_db_upgrade_migrates_a_fresh_sqlite_file(installed: Installed) -> None:
    database = installed.home / "upgraded.db"
    env = {
        **installed.env,
        "AUTH_ENV": "testing",
        "AUTH_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
    }

    result = run([installed.bin("auth-service"), "db", "upgrade"], cwd=installed.home, env=env)

    succeeded(result, "auth-service db upgrade")
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        (revisions,) = connection.execute("SELECT count(*) FROM alembic_version").fetchone()
    assert {"users", "refresh_families", "revoked_tokens", "alembic_version"} <= tables
    assert revisions == 1


async def test_service_serve_starts_without_a_hypercorn_toml_and_serves(
    installed: Installed,
) -> None:
    workdir = installed.home / "served"
    workdir.mkdir()
    assert not (workdir / "hypercorn.toml").exists()
    port = free_port()
    env = {
        **installed.env,
        "AUTH_ARGON2_MEMORY_COST": "1024",
        "AUTH_ARGON2_TIME_COST": "1",
    }  # development: the SQLite file and the secret go to ./instance, as for a new user
    process = await asyncio.create_subprocess_exec(
        installed.bin("python"),
        "-m",
        "service.serve",
        "--workers",
        "1",
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        "none",
        cwd=workdir,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    assert process.stderr is not None
    try:
        serving = await asyncio.wait_for(
            wait_for_line(process.stderr, "auth-service: serving on"), timeout=120
        )
        await wait_until_up(base, process)
        async with httpx.AsyncClient(base_url=base) as client:
            health = await client.get("/health")
            signup = await client.post(
                "/signup",
                json={"username": "alice", "email": "alice@example.com", "password": PASSWORD},
            )
            login = await client.post("/login", data={"username": "alice", "password": PASSWORD})
            token = login.json().get("access_token", "")
            protected = await client.get("/protected", headers={"Authorization": f"Bearer {token}"})
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)

    assert serving == f"auth-service: serving on {base} with 1 worker"
    assert health.status_code == 200
    assert signup.status_code == 201, signup.text
    assert signup.json()["username"] == "alice"
    assert login.status_code == 200, login.text
    assert login.json()["token_type"].lower() == "bearer"
    assert protected.status_code == 200
    assert protected.json() == {"id": signup.json()["id"], "username": "alice"}
    assert (workdir / "instance" / "auth.db").exists()
    assert process.returncode == 0


async def test_hypercorn_serves_the_asgi_app_without_a_config(installed: Installed) -> None:
    workdir = installed.home / "hypercorn"
    workdir.mkdir()
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        installed.bin("hypercorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "service.asgi:app",
        cwd=workdir,
        env=installed.env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_until_up(base, process)
        async with httpx.AsyncClient(base_url=base) as client:
            ready = await client.get("/ready")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)

    assert ready.status_code == 200
    assert (workdir / "instance" / "auth.db").exists()


def test_the_shop_examples_tests_pass_with_the_installed_plugin(installed: Installed) -> None:
    project = installed.home / "project"
    (project / "examples").mkdir(parents=True)
    shutil.copy2(ROOT / "examples/__init__.py", project / "examples")
    shutil.copytree(
        ROOT / "examples/shop",
        project / "examples/shop",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    # A project of its own, in pytest-asyncio's default strict mode.
    (project / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    (project / "test_where_service_comes_from.py").write_text(
        "from pathlib import Path\n\nimport service\n\n\n"
        "def test_service_is_the_installed_package() -> None:\n"
        f"    assert Path(service.__file__).is_relative_to({str(installed.venv)!r})\n"
    )
    shop_tests = (ROOT / "examples/shop/tests/test_shop.py").read_text().count("\nasync def test_")

    result = installed.run(
        installed.bin("python"),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "examples/shop",
        "test_where_service_comes_from.py",
        cwd=project,
    )

    succeeded(result, "the shop's pytest session")
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"{shop_tests + 1} passed"), result.stdout[-3000:]
    assert "warning" not in summary, result.stdout[-3000:]
