"""README.md's section "Use it from your own project", run: each of its Python examples follows a
``<!-- test: NAME -->`` line and is exercised here as the section says to use it (``myapp.py``
on the extension's tokens, the ``mount_routes`` app through its own API, the conftest and the
test file in a real pytest session of a project made of the README's files alone)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from hypercorn.utils import load_application
from quart import Quart
from quart_schema import QuartSchema

from service import AuthExtension
from service.core.keys import generate_private_key_pem
from service.testing import TokenMinter, UserMaker
from service.web.state import get_state
from tests import backends
from tests.servers import ROOT, clean_env, run_python, serve
from tests.support import PASSWORD, bearer, make_settings, running_app, signup_and_login

SECTION = "## Use it from your own project"
EXAMPLE = re.compile(r"<!-- test: ([\w-]+) -->\n```python\n(.*?)```\n", re.DOTALL)
# Every marked example, each run by a test below: a new example needs its test here.
RUN_HERE = {"myapp", "mount-routes", "resource-server", "conftest", "test_myapp"}


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + len(SECTION) + 1)
    return text[start:] if end == -1 else text[start:end]


def example(name: str) -> str:
    examples: dict[str, str] = dict(EXAMPLE.findall(section()))
    return examples[name]


def load(name: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example ``name`` written to ``folder/<module>.py`` and imported, for this test only."""
    module_name = f"readme_{name.replace('-', '_')}"
    path = folder / f"{module_name}.py"
    path.write_text(example(name))
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module_name, module)  # Quart finds its root path there
    spec.loader.exec_module(module)
    return module


def test_every_python_example_of_the_section_is_marked_and_run_here() -> None:
    text = section()
    marked = EXAMPLE.findall(text)

    assert text.count("```python") == len(marked)
    assert sorted(name for name, _ in marked) == sorted(RUN_HERE)


async def test_myapp_guards_its_routes_with_the_extensions_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    myapp = load("myapp", tmp_path, monkeypatch)
    app = myapp.create_app(make_settings(tmp_path))

    async with app.test_app():
        accounts = get_state(app).accounts
        make_user, mint_token = UserMaker(accounts), TokenMinter(accounts)
        clerk = await make_user("clerk")
        admin = await make_user("boss", roles=["admin"])
        client = app.test_client()

        anonymous = await client.get("/orders")
        orders = await client.get("/orders", headers=bearer(await mint_token(clerk)))
        fresh = await client.post("/checkout", headers=bearer(await mint_token(clerk)))
        stale = await client.post("/checkout", headers=bearer(await mint_token(clerk, age=301)))
        clerk_reports = await client.get("/reports", headers=bearer(await mint_token(clerk)))
        admin_reports = await client.get("/reports", headers=bearer(await mint_token(admin)))

    assert anonymous.status_code == 401
    assert (await anonymous.get_json())["code"] == "TOKEN_MISSING"
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="auth-service"'
    assert orders.status_code == 200
    assert await orders.get_json() == {"owner": "clerk", "tenant": "acme"}
    assert fresh.status_code == 201
    assert await fresh.get_json() == {"paid_by": "clerk"}
    assert (await stale.get_json())["code"] == "FRESH_TOKEN_REQUIRED"
    assert (await clerk_reports.get_json())["code"] == "INSUFFICIENT_ROLE"
    assert admin_reports.status_code == 200
    assert await admin_reports.get_json() == {"orders": 2}


async def test_myapp_accepts_the_tokens_of_the_service_on_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README: without mount_routes, the service beside the app issues the tokens, and a
    logout there is refused by the app on its next request."""
    settings = make_settings(tmp_path, jwt_secret="s" * 48)  # testing: else a key per app
    myapp = load("myapp", tmp_path, monkeypatch).create_app(settings)

    async with running_app(settings) as service, myapp.test_app():
        service_client, client = service.test_client(), myapp.test_client()
        pair = await signup_and_login(service_client, "alice")
        before = await client.get("/orders", headers=bearer(pair["access_token"]))
        await service_client.post("/logout", headers=bearer(pair["access_token"]))
        after = await client.get("/orders", headers=bearer(pair["access_token"]))

    assert before.status_code == 200
    assert await before.get_json() == {"owner": "alice", "tenant": None}
    assert after.status_code == 401
    assert (await after.get_json())["code"] == "TOKEN_REVOKED"


def test_myapp_is_served_by_its_factory_as_the_readme_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hypercorn "myapp:create_app()"`` (and python -m service.serve, which loads apps the same
    way): the application path calls the factory, which reads the environment."""
    (tmp_path / "myapp.py").write_text(example("myapp"))
    monkeypatch.setenv("AUTH_ENV", "testing")
    monkeypatch.setenv("AUTH_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'served.db'}")
    monkeypatch.setattr(sys, "path", list(sys.path))  # hypercorn puts the module's folder first
    monkeypatch.delitem(sys.modules, "myapp", raising=False)

    wrapped = load_application(str(tmp_path / "myapp.py").replace(".py", ":create_app()"), 0)

    app = wrapped.app  # type: ignore[attr-defined]
    assert isinstance(app, Quart)
    assert get_state(app).settings.database_url.endswith("/served.db")
    monkeypatch.delitem(sys.modules, "myapp")


async def test_mount_routes_serves_the_api_on_an_app_without_quart_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_ENV", "testing")
    monkeypatch.setenv("AUTH_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}")
    monkeypatch.setenv("AUTH_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("AUTH_ARGON2_MEMORY_COST", "1024")
    monkeypatch.setenv("AUTH_ARGON2_TIME_COST", "1")
    app = load("mount-routes", tmp_path, monkeypatch).app

    async with app.test_app():
        client = app.test_client()
        index = await client.get("/")
        signup = await client.post(
            "/signup",
            json={"username": "alice", "email": "alice@example.com", "password": PASSWORD},
        )
        login = await client.post("/login", json={"username": "alice", "password": PASSWORD})
        token = (await login.get_json())["access_token"]
        protected = await client.get("/protected", headers=bearer(token))
        document = await client.get("/openapi.json")

    assert await index.get_json() == {"hello": "world"}
    assert signup.status_code == 201
    assert login.status_code == 200
    assert await protected.get_json() == {
        "id": (await signup.get_json())["id"],
        "username": "alice",
    }
    assert document.status_code == 404


async def test_quart_schema_installed_first_documents_the_mounted_api(tmp_path: Path) -> None:
    app = Quart("documented")
    QuartSchema(app)
    AuthExtension(app, settings=make_settings(tmp_path), mount_routes=True)

    async with app.test_app():
        document = await app.test_client().get("/openapi.json")

    assert document.status_code == 200
    assert {"/signup", "/login", "/me"} <= set((await document.get_json())["paths"])


@pytest.mark.slow
def test_the_conftest_and_test_file_pass_in_a_pytest_session_of_their_own(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "myapp.py").write_text(example("myapp"))
    (project / "conftest.py").write_text(example("conftest"))
    (project / "test_myapp.py").write_text(example("test_myapp"))
    # The ini line the README recommends; pytest-asyncio stays in its default strict mode.
    (project / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    tests = example("test_myapp").count("\nasync def test_")
    # The plugin is found by its entry point (-p auth_service), as installed; the checkout's
    # other plugins (schemathesis, playwright, xdist) are left out: ~2 s of start-up each.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AUTH_"))}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    argv = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "auth_service", "-p", "asyncio"]

    result = subprocess.run(
        [sys.executable, *argv],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"{tests} passed"), result.stdout[-3000:]
    assert "warning" not in summary, result.stdout[-3000:]


async def test_the_resource_server_example_trusts_the_services_tokens_without_its_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backends.check_redis()
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(generate_private_key_pem("ES256"))
    prefix = f"readme-rs-{backends.WORKER}-{uuid.uuid4().hex[:8]}"
    service_env = clean_env(
        AUTH_ENV="testing",
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        AUTH_JWT_ALGORITHM="ES256",
        AUTH_JWT_PRIVATE_KEY_FILE=str(key_file),
        AUTH_REDIS_URL=backends.REDIS_URL,
        AUTH_REDIS_PREFIX=prefix,
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
    )
    untouched = tmp_path / "inventory-db"
    try:
        async with serve("service.asgi:app", service_env, tmp_path) as service:
            created = run_python(
                "-m", "service", "clients", "create", "inventory-sync", "--scope",
                "inventory:write", cwd=tmp_path, env=service_env,
            )  # fmt: skip
            assert created.returncode == 0, created.stderr
            machine = json.loads(created.stdout)
            # The README's shell lines, as the environment of the inventory app.
            monkeypatch.setenv("AUTH_JWKS_URL", f"{service.base}/.well-known/jwks.json")
            monkeypatch.setenv("AUTH_REDIS_URL", backends.REDIS_URL)
            monkeypatch.setenv("AUTH_REDIS_PREFIX", prefix)
            monkeypatch.setenv("AUTH_DATABASE_URL", f"sqlite+aiosqlite:///{untouched / 'x.db'}")
            inventory = load("resource-server", tmp_path, monkeypatch).app

            async with httpx.AsyncClient(base_url=service.base) as api, inventory.test_app():
                client = inventory.test_client()
                signup = {"username": "alice", "email": "a@example.com", "password": PASSWORD}
                assert (await api.post("/signup", json=signup)).status_code == 201
                login = await api.post("/login", json={"username": "alice", "password": PASSWORD})
                token = login.json()["access_token"]
                machine_token = (
                    await api.post(
                        "/token",
                        data={"grant_type": "client_credentials"},
                        auth=(machine["client_id"], machine["client_secret"]),
                    )
                ).json()["access_token"]

                stock = await client.get("/stock", headers=bearer(token))
                synced = await client.post("/stock/sync", headers=bearer(machine_token))
                user_on_sync = await client.post("/stock/sync", headers=bearer(token))
                assert (await api.post("/logout", headers=bearer(token))).status_code == 204
                after_logout = await client.get("/stock", headers=bearer(token))

        assert (stock.status_code, await stock.get_json()) == (200, {"for": "alice"})
        assert (synced.status_code, await synced.get_json()) == (200, {"by": machine["client_id"]})
        assert user_on_sync.status_code == 403
        assert after_logout.status_code == 401
        assert (await after_logout.get_json())["code"] == "TOKEN_REVOKED"
        assert not untouched.exists()
    finally:
        backends.drop_redis_prefix(prefix)
