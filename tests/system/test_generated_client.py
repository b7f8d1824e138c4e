"""A typed client generated from the live document (openapi-python-client) imports and works.

The server runs under hypercorn; its /openapi.json goes through ``openapi-python-client
generate`` (the venv's, no network, no formatter run on the output), every generated module is
imported, and the generated client signs up, logs in, reads /me, refreshes and logs out.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import sys
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.servers import clean_env, hypercorn_server
from tests.support import PASSWORD

pytestmark = pytest.mark.slow

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "auth_service_generated_client"
PUBLIC_URL = "https://auth.example.test"
# No post hooks: the generator would run ruff over its output, which is not what is tested.
GENERATOR_CONFIG = f"package_name_override: {PACKAGE}\npost_hooks: []\n"


def write_inputs(document: dict[str, Any], folder: Path) -> None:
    folder.mkdir()
    (folder / "openapi.json").write_text(json.dumps(document))
    (folder / "config.yaml").write_text(GENERATOR_CONFIG)


async def generate(document: dict[str, Any], folder: Path) -> Path:
    """The client package generated from ``document`` into ``folder``; warnings are failures
    (openapi-python-client leaves out, with a warning, an endpoint it cannot handle)."""
    write_inputs(document, folder)
    process = await asyncio.create_subprocess_exec(
        str(GENERATOR),
        "generate",
        "--path",
        str(folder / "openapi.json"),
        "--config",
        str(folder / "config.yaml"),
        "--meta",
        "none",
        "--output-path",
        str(folder / PACKAGE),
        "--fail-on-warning",
        cwd=folder,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, output.decode(errors="replace")
    return folder / PACKAGE


@contextmanager
def import_all(folder: Path) -> Iterator[dict[str, ModuleType]]:
    """Every module of the generated package, imported; the package is forgotten afterwards."""
    sys.path.insert(0, str(folder))
    try:
        package = importlib.import_module(PACKAGE)
        modules = {PACKAGE: package}
        for info in pkgutil.walk_packages(package.__path__, f"{PACKAGE}."):
            modules[info.name] = importlib.import_module(info.name)
        yield modules
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture
def server_env() -> dict[str, str]:
    return clean_env(
        AUTH_ENV="testing",
        AUTH_JWT_SECRET="g" * 48,
        AUTH_PUBLIC_URL=PUBLIC_URL,
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
        AUTH_ARGON2_PARALLELISM="1",
    )


async def test_the_generated_client_imports_and_drives_a_session(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    async with hypercorn_server(tmp_path, server_env) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            document = (await http.get("/openapi.json")).json()
        assert document["servers"] == [{"url": PUBLIC_URL}]
        generated = await generate(document, tmp_path / "client")

        with import_all(generated.parent) as modules:
            operation_ids = {
                operation["operationId"]
                for item in document["paths"].values()
                for operation in item.values()
            }
            endpoint_modules = {
                name.rsplit(".", 1)[1]
                for name in modules
                if name.startswith(f"{PACKAGE}.api.") and name.count(".") == 3
            }
            # One module per operation: none was left out.
            assert endpoint_modules == operation_ids
            await drive_a_session(base, modules)


async def drive_a_session(base: str, modules: dict[str, ModuleType]) -> None:
    def module(name: str) -> Any:
        return modules[f"{PACKAGE}.{name}"]

    client_module = module("client")
    models = module("models")
    anonymous = client_module.Client(base_url=base, raise_on_unexpected_status=True)

    signup = await module("api.auth.post_signup").asyncio_detailed(
        client=anonymous,
        body=models.SignupRequest(username="gen", email="Gen@Example.com", password=PASSWORD),
    )
    assert signup.status_code == 201
    assert isinstance(signup.parsed, models.UserOut)
    assert (signup.parsed.username, signup.parsed.email) == ("gen", "gen@example.com")
    assert signup.headers["location"] == f"/users/{signup.parsed.id}"

    login = await module("api.auth.post_login").asyncio_detailed(
        client=anonymous, body=models.LoginRequest(username="gen", password=PASSWORD)
    )
    assert login.status_code == 200
    pair = login.parsed
    assert isinstance(pair, models.TokenPairOut)
    assert pair.token_type == "Bearer"

    signed_in = client_module.AuthenticatedClient(base_url=base, token=pair.access_token)
    me = await module("api.users.get_me").asyncio_detailed(client=signed_in)
    assert me.status_code == 200
    assert isinstance(me.parsed, models.UserOut)
    assert me.parsed.id == signup.parsed.id
    assert me.parsed.roles == []

    # The refresh token as Bearer (the refreshToken scheme), no body.
    holder = client_module.AuthenticatedClient(base_url=base, token=pair.refresh_token)
    refreshed = await module("api.auth.post_refresh").asyncio_detailed(client=holder)
    assert refreshed.status_code == 200
    assert isinstance(refreshed.parsed, models.TokenPairOut)
    assert refreshed.parsed.refresh_token != pair.refresh_token
    renewed = client_module.AuthenticatedClient(base_url=base, token=refreshed.parsed.access_token)
    logout = await module("api.auth.post_logout").asyncio_detailed(client=renewed)
    assert logout.status_code == 204
    after = await module("api.users.get_me").asyncio_detailed(client=renewed)
    assert after.status_code == 401
    assert isinstance(after.parsed, models.Problem)
    assert after.parsed.code == "TOKEN_REVOKED"

    # /token is documented as the OAuth2 form: the generated client posts a form.
    token_module = module("api.auth.post_token")
    body_class = typing.get_type_hints(token_module._get_kwargs)["body"]
    token = await token_module.asyncio_detailed(
        client=anonymous,
        body=body_class.from_dict(
            {"grant_type": "password", "username": "gen", "password": PASSWORD}
        ),
    )
    assert token.status_code == 200, token.content
    assert token.parsed.access_token == token.parsed.token
    assert str(token.parsed.user_id) == str(signup.parsed.id)
