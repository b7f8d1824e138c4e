"""Guarded WebSockets against a real server (hypercorn serving tests/ws_app.py) with a real
WebSocket client (``websockets``), and in Chromium on the cookie session."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests import backends
from tests.servers import HANG_GUARD_SECONDS, Server, clean_env, run_python, serve

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
APP = "tests.ws_app:app"


@dataclass
class Site:
    server: Server
    env: dict[str, str]
    folder: Path

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def ws(self) -> str:
        return self.server.base.replace("http://", "ws://")


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def site_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = clean_env(
        AUTH_ENV="testing",
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
        AUTH_THROTTLE_ENABLED="false",
        # The idle watch: short here, so the test waits fractions of a second, not ten.
        AUTH_WEBSOCKET_RECHECK_SECONDS="0.3",
    )
    if request.param == "sqlite":
        yield env
        return
    backends.check_postgres()
    backends.check_redis()
    database = backends.create_database()
    prefix = f"ws-{backends.WORKER}-{uuid.uuid4().hex[:8]}"
    env.update(
        AUTH_DATABASE_URL=backends.postgres_url(database),
        AUTH_REDIS_URL=backends.REDIS_URL,
        AUTH_REDIS_PREFIX=prefix,
    )
    migrated = run_python("-m", "service", "db", "upgrade", cwd=tmp_path, env=env)
    assert migrated.returncode == 0, migrated.stderr
    try:
        yield env
    finally:
        backends.drop_database(database)
        backends.drop_redis_prefix(prefix)


@pytest.fixture
async def site(site_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Site]:
    async with serve(APP, site_env, tmp_path) as server:
        yield Site(server, site_env, tmp_path)


async def sign_up(site: Site, username: str, **extra: Any) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=site.base) as http:
        body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
        assert (await http.post("/signup", json=body)).status_code == 201
    return await log_in(site, username)


async def log_in(site: Site, username: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=site.base) as http:
        response = await http.post("/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    pair: dict[str, str] = response.json()
    return pair


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def socket(site: Site, path: str, **headers: str) -> AsyncIterator[ClientConnection]:
    async with connect(site.ws + path, additional_headers=headers, open_timeout=30) as opened:
        yield opened


async def refused(site: Site, path: str, **headers: str) -> tuple[int, dict[str, Any]]:
    """The handshake's HTTP answer when the server refuses to open the socket."""
    with pytest.raises(InvalidStatus) as refusal:
        async with socket(site, path, **headers):
            pass
    response = refusal.value.response
    assert response.headers["Content-Type"] == "application/problem+json"
    return response.status_code, json.loads(response.body or b"{}")


async def closed_code(opened: ClientConnection, *, send: str | None = None) -> int:
    """Send ``send`` (if any), then read until the server closes; the close code."""
    if send is not None:
        await opened.send(send)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(_read_until_closed(opened), HANG_GUARD_SECONDS)
    received = closed.value.rcvd
    assert received is not None
    return received.code


async def _read_until_closed(opened: ClientConnection) -> None:
    while True:
        await opened.recv()


async def test_a_bearer_token_opens_the_socket_and_the_view_knows_the_user(site: Site) -> None:
    pair = await sign_up(site, "alice")
    async with socket(site, "/ws/echo", **bearer(pair["access_token"])) as opened:
        assert await opened.recv() == "hello alice"
        await opened.send("ping")
        assert await opened.recv() == "echo ping"


async def test_a_refused_token_is_answered_before_the_handshake_completes(site: Site) -> None:
    pair = await sign_up(site, "bob")
    assert await refused(site, "/ws/echo") == (401, await _problem(401, "TOKEN_MISSING"))
    status, body = await refused(site, "/ws/echo", **bearer("not-a-token"))
    assert (status, body["code"]) == (401, "TOKEN_INVALID")
    status, body = await refused(site, "/ws/echo", **bearer(pair["refresh_token"]))
    assert (status, body["code"]) == (401, "WRONG_TOKEN_TYPE")
    status, body = await refused(site, "/ws/admin", **bearer(pair["access_token"]))
    assert (status, body["code"]) == (403, "INSUFFICIENT_ROLE")
    status, body = await refused(site, "/ws/machine", **bearer(pair["access_token"]))
    assert (status, body["code"]) == (403, "INSUFFICIENT_SCOPE")


async def _problem(status: int, code: str) -> dict[str, Any]:
    titles = {"TOKEN_MISSING": "Token missing"}
    return {
        "type": "about:blank",
        "title": titles[code],
        "status": status,
        "detail": "Send an access token as 'Authorization: Bearer <token>'.",
        "code": code,
    }


async def _cookie_login(site: Site, username: str) -> str:
    await sign_up(site, username)
    async with httpx.AsyncClient(base_url=site.base) as http:
        response = await http.post("/session", json={"username": username, "password": PASSWORD})
        assert response.status_code == 200, response.text
        cookie: str = response.cookies["access_token_cookie"]
    return cookie


async def test_the_cookie_opens_the_socket_only_from_this_site(site: Site) -> None:
    cookie = await _cookie_login(site, "carol")
    headers = {"Cookie": f"access_token_cookie={cookie}"}
    async with socket(site, "/ws/echo", Origin=site.base, **headers) as opened:
        assert await opened.recv() == "hello carol"
    # Cross-site WebSocket hijacking: another site's page opening a socket on the cookie.
    status, body = await refused(site, "/ws/echo", Origin="http://evil.example", **headers)
    assert (status, body["code"]) == (403, "CSRF_FAILED")


Revocation = Callable[[Site, str, dict[str, str]], Awaitable[None]]


async def _logout(site: Site, username: str, pair: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=site.base) as http:
        assert (await http.post("/logout", headers=bearer(pair["access_token"]))).status_code == 204


async def _logout_everywhere(site: Site, username: str, pair: dict[str, str]) -> None:
    other = await log_in(site, username)
    async with httpx.AsyncClient(base_url=site.base) as http:
        response = await http.post("/logout/all", headers=bearer(other["access_token"]))
    assert response.status_code == 204


async def _password_change(site: Site, username: str, pair: dict[str, str]) -> None:
    other = await log_in(site, username)  # a fresh token of another session
    async with httpx.AsyncClient(base_url=site.base) as http:
        response = await http.post(
            "/me/password",
            headers=bearer(other["access_token"]),
            json={"current_password": PASSWORD, "new_password": "another long passphrase"},
        )
    assert response.status_code == 204, response.text


async def _disable(site: Site, username: str, pair: dict[str, str]) -> None:
    result = run_python(
        "-m", "service", "users", "disable", username, cwd=site.folder, env=site.env
    )
    assert result.returncode == 0, result.stderr


REVOCATIONS: dict[str, Revocation] = {
    "logout": _logout,
    "logout-all": _logout_everywhere,
    "password-change": _password_change,
    "user-disabled": _disable,
}


@pytest.mark.parametrize("how", list(REVOCATIONS))
async def test_an_open_socket_whose_token_is_revoked_closes_1008_on_its_next_message(
    site: Site, how: str
) -> None:
    username = how.replace("-", "_")
    pair = await sign_up(site, username)
    async with socket(site, "/ws/echo", **bearer(pair["access_token"])) as opened:
        assert await opened.recv() == f"hello {username}"
        await REVOCATIONS[how](site, username, pair)
        assert await closed_code(opened, send="still there?") == 1008


async def test_an_idle_socket_whose_token_is_revoked_is_closed_by_the_watch(site: Site) -> None:
    pair = await sign_up(site, "dave")
    async with socket(site, "/ws/echo", **bearer(pair["access_token"])) as opened:
        assert await opened.recv() == "hello dave"
        await _logout(site, "dave", pair)
        # Nothing is sent: the watch (AUTH_WEBSOCKET_RECHECK_SECONDS) finds the revocation.
        assert await closed_code(opened) == 1008


async def test_a_machine_clients_socket_closes_when_the_client_is_deleted(site: Site) -> None:
    created = run_python(
        "-m", "service", "clients", "create", "feeder", "--scope", "feed:read",
        cwd=site.folder, env=site.env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    machine = json.loads(created.stdout)
    async with httpx.AsyncClient(base_url=site.base) as http:
        token = (
            await http.post(
                "/token",
                data={"grant_type": "client_credentials"},
                auth=(machine["client_id"], machine["client_secret"]),
            )
        ).json()["access_token"]
    assert (await refused(site, "/ws/echo", **bearer(token)))[1]["code"] == "WRONG_TOKEN_TYPE"
    async with socket(site, "/ws/machine", **bearer(token)) as opened:
        assert await opened.recv() == f"client {machine['client_id']}"
        deleted = run_python(
            "-m", "service", "clients", "delete", "feeder", cwd=site.folder, env=site.env
        )
        assert deleted.returncode == 0, deleted.stderr
        assert await closed_code(opened, send="tick") == 1008


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_PRESENT = CHROMIUM.exists()


async def test_chromium_opens_the_socket_on_the_cookie_session(site: Site) -> None:
    if not CHROMIUM_PRESENT:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {CHROMIUM} is missing", pytrace=False)
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.async_api import async_playwright, expect

    cookie = await _cookie_login(site, "erin")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            context = await browser.new_context()
            await context.add_cookies(
                [{"name": "access_token_cookie", "value": cookie, "url": site.base}]
            )
            page = await context.new_page()
            await page.goto(site.base + "/socket-page")
            heard = page.locator("#heard li")
            await expect(heard.nth(0)).to_have_text("hello erin")
            await expect(heard.nth(1)).to_have_text("echo from the page")
            # Logged out elsewhere: the page's idle socket is closed with 1008 by the watch.
            async with httpx.AsyncClient(base_url=site.base) as http:
                response = await http.post("/logout", headers=bearer(cookie))
            assert response.status_code == 204, response.text
            await expect(heard.nth(2)).to_have_text("closed 1008")
        finally:
            await browser.close()
