"""Fixtures named by purpose: settings on a temporary SQLite file, the app, a client, a user."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from service.core.config import Settings
from service.store import migrations
from service.store.db import Database
from tests import backends, servers
from tests.commands import InProcessCommand, testing_variables
from tests.support import PASSWORD, Client, SettingsFactory, SignedUp, make_settings, running_app

# Started first, so that no worker is left running one of them alone at the end of the run. The
# other tests keep their order: the system tests among them, each a few seconds, are spread over
# the run instead of all starting processes at once.
LONGEST_FIRST = (
    "tests/system/test_wheel.py",
    "tests/system/test_schemathesis.py",
    "tests/system/test_pytest_plugin.py",
    "tests/system/test_resource_server.py",
    "tests/system/test_websockets.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first. The plugin's tests of real pytest sessions (the ``runs`` fixture
    starts six) are system tests."""
    for item in items:
        if item.nodeid.startswith("tests/system/test_pytest_plugin.py") and "runs" in getattr(
            item, "fixturenames", ()
        ):
            item.add_marker(pytest.mark.slow)

    def rank(item: pytest.Item) -> int:
        longest = [i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)]
        return longest[0] if longest else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown when it is disabled
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``-n N``: one test per unit of work, the modules of tests/scheduling.py whole."""
    if config.getvalue("dist") != "load":
        return None  # another --dist was asked for
    from tests.scheduling import ModulesTogetherScheduling

    return ModulesTogetherScheduling(config, log)


# A parameter drawn at random when its module is imported (a bcrypt salt, a uuid4) differs in each
# xdist worker, and every worker must collect the same test ids: their ids leave that part out.
RANDOM_BCRYPT_HASH = re.compile(r"(\$2[abxy]?\$\d\d\$)([./A-Za-z0-9]{50,53})")
RANDOM_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    if not isinstance(val, str):
        return None
    if bcrypt_hash := RANDOM_BCRYPT_HASH.fullmatch(val):
        return f"{bcrypt_hash[1]}<{len(bcrypt_hash[2])} characters of salt and hash>"
    if RANDOM_UUID.fullmatch(val):
        return "<a random uuid4>"
    return None


@pytest.fixture(scope="session", autouse=True)
def _ports_claimed_once(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One folder of claimed ports for the whole run: under xdist, the workers' base
    temporary folders share their parent."""
    run_folder = tmp_path_factory.getbasetemp()
    if backends.WORKER != "main":
        run_folder = run_folder.parent
    claims = run_folder / "ports"
    claims.mkdir(exist_ok=True)
    servers.PORT_CLAIMS = claims


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own AUTH_* variables never leak into a test."""
    for name in list(os.environ):
        if name.startswith("AUTH_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _audit_handler_of_this_test_only() -> Iterator[None]:
    """The app adds the audit logger's handler once, on the sys.stdout of that moment
    (service/core/audit.py): under capsys a stream closed after the test, where every later
    audit line would be a logging error on stderr. A handler added in a test goes with it."""
    audit_logger = logging.getLogger("service.audit")
    before = list(audit_logger.handlers)
    yield
    for handler in [h for h in audit_logger.handlers if h not in before]:
        audit_logger.removeHandler(handler)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A PostgreSQL database migrated once; each test copies it (CREATE DATABASE ... TEMPLATE)."""
    backends.check_postgres()
    backends.check_redis()
    name = backends.create_database()

    async def migrate() -> None:
        database = Database(
            make_settings(Path("/nonexistent"), database_url=backends.postgres_url(name))
        )
        try:
            await migrations.upgrade(database)
        finally:
            await database.dispose()

    backends.run_sync(migrate())
    yield name
    backends.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def settings_factory(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[SettingsFactory]:
    """Settings for this test's backend: a temporary SQLite file, or a fresh PostgreSQL
    database with its own Redis key prefix (the scale-out configuration)."""
    if backend == "sqlite":
        yield lambda **overrides: make_settings(tmp_path, **overrides)
        return
    template: str = request.getfixturevalue("postgres_template")
    database = backends.create_database(template)
    prefix = f"test-{database}"

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": backends.postgres_url(database),
            "redis_url": backends.REDIS_URL,
            "redis_prefix": prefix,
        }
        return make_settings(tmp_path, **{**values, **overrides})

    yield factory
    backends.drop_database(database)
    backends.drop_redis_prefix(prefix)


@pytest.fixture
def settings(settings_factory: SettingsFactory) -> Settings:
    return settings_factory()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Quart]:
    async with running_app(settings) as application:
        yield application


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


@pytest.fixture
async def user(client: Client) -> SignedUp:
    response = await client.post(
        "/signup",
        json={"username": "alice", "email": "alice@example.com", "password": PASSWORD},
    )
    assert response.status_code == 201
    body = await response.get_json()
    return SignedUp(body["id"], "alice", "alice@example.com", PASSWORD)


@pytest.fixture
async def tokens(client: Client, user: SignedUp) -> dict[str, Any]:
    response = await client.post(
        "/login", json={"username": user.username, "password": user.password}
    )
    assert response.status_code == 200
    body: dict[str, Any] = await response.get_json()
    return body


@pytest.fixture
def auth_headers(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.fixture
def service_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> InProcessCommand:
    """The service's command in this process, on a testing environment whose SQLite database
    is ``tmp_path/auth.db``."""
    return InProcessCommand(monkeypatch, capsys, tmp_path, testing_variables(tmp_path / "auth.db"))
