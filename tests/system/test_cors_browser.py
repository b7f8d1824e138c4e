"""CORS in a real browser: Debian's Chromium, a live hypercorn, and a page of another origin.

The page is the seed's client (``fetch`` of ``/token``, then of ``/protected`` with the token)
served from a second port of 127.0.0.1: that origin is listed in AUTH_CORS_ORIGINS, a third
one is not. Between ports of one host the SameSite=Lax cookies are same-site, so the listed
page can also use the cookie session with ``credentials: 'include'``.

Skipped when /usr/bin/chromium is missing, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from tests.servers import clean_env, hypercorn_server

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"CI=true but {CHROMIUM} is missing: the browser tests cannot run", pytrace=False
        )
    pytest.skip(f"{CHROMIUM} is missing", allow_module_level=True)

# The browser and the servers are shared by the module's tests, so they run on its event loop.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery staple"

# The seed's client, as a page of another origin runs it. A fetch the browser blocks rejects
# with a TypeError: its name is the answer then.
CLIENT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Client</title></head>
<body>
<script>
async function seedClient(base, username, password) {
  try {
    const login = await fetch(base + '/token', {
      method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({username, password}),
    });
    const {token, user_id} = await login.json();
    const answer = await fetch(base + '/protected', {
      headers: {Authorization: 'Bearer ' + token},
    });
    return {user_id, status: answer.status, body: await answer.json(),
            request_id: answer.headers.get('X-Request-ID')};
  } catch (error) {
    return {error: error.name};
  }
}

async function cookieSession(base, username, password) {
  try {
    const login = await fetch(base + '/session', {
      method: 'POST',
      credentials: 'include',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({username, password}),
    });
    const {csrf_token} = await login.json();
    const me = await fetch(base + '/me', {credentials: 'include'});
    const user = await me.json();
    const logout = await fetch(base + '/session', {
      method: 'DELETE',
      credentials: 'include',
      headers: {'X-CSRF-Token': csrf_token},
    });
    const after = await fetch(base + '/me', {credentials: 'include'});
    return {login: login.status, me: me.status, username: user.username,
            logout: logout.status, after: after.status,
            challenge: after.headers.get('WWW-Authenticate')};
  } catch (error) {
    return {error: error.name};
  }
}

async function simpleGet(base) {
  try {
    const answer = await fetch(base + '/health');
    return {status: answer.status};
  } catch (error) {
    return {error: error.name};
  }
}
</script>
</body></html>
"""


@dataclass(frozen=True)
class Origins:
    listed: str
    unlisted: str


@dataclass
class ClientTab:
    page: Page
    console: list[str]

    async def run(self, function: str, *args: str) -> Any:
        return await self.page.evaluate(f"(args) => {function}(...args)", list(args))


OpenClient = Callable[[str], Awaitable[ClientTab]]


def serve_client_page() -> tuple[ThreadingHTTPServer, threading.Thread]:
    data = CLIENT_PAGE.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/client.html":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, thread


@pytest.fixture(scope="module")
def origins() -> Iterator[Origins]:
    """Two more origins (same host, other ports) serving the client page."""
    servers = [serve_client_page() for _ in range(2)]
    try:
        listed, unlisted = (f"http://127.0.0.1:{httpd.server_address[1]}" for httpd, _ in servers)
        yield Origins(listed=listed, unlisted=unlisted)
    finally:
        for httpd, thread in servers:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory, origins: Origins) -> AsyncIterator[str]:
    """The service under hypercorn, listing one of the two origins; its base URL."""
    workdir = tmp_path_factory.mktemp("cors-server")
    env = clean_env(
        AUTH_ENV="testing",
        AUTH_COOKIE_SECURE="false",  # plain http on 127.0.0.1
        AUTH_CORS_ORIGINS=origins.listed,
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'auth.db'}",
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
        AUTH_ARGON2_PARALLELISM="1",
    )
    async with hypercorn_server(workdir, env) as base:
        yield base


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def tab(browser: Browser) -> AsyncIterator[OpenClient]:
    """Opens the client page of an origin in a fresh profile (no cookies, no preflight cache)."""
    context = await browser.new_context()
    context.set_default_timeout(15_000)

    async def open_client(origin: str) -> ClientTab:
        page = await context.new_page()
        console: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            console.append(message.text)

        page.on("console", on_console)
        await page.goto(f"{origin}/client.html")
        return ClientTab(page, console)

    try:
        yield open_client
    finally:
        await context.close()


def sign_up(server: str, username: str) -> str:
    response = httpx.post(
        f"{server}/signup",
        json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    user_id: str = response.json()["id"]
    return user_id


async def test_the_seed_client_works_from_a_listed_origin(
    tab: OpenClient, server: str, origins: Origins
) -> None:
    user_id = sign_up(server, "ada")
    client = await tab(origins.listed)

    result = await client.run("seedClient", server, "ada", PASSWORD)

    assert result["user_id"] == user_id
    assert result["status"] == 200
    assert result["body"] == {"id": user_id, "username": "ada"}
    assert result["request_id"]  # an exposed header: readable by the page's script


async def test_a_listed_origin_uses_the_cookie_session(
    tab: OpenClient, server: str, origins: Origins
) -> None:
    sign_up(server, "grace")
    client = await tab(origins.listed)

    result = await client.run("cookieSession", server, "grace", PASSWORD)

    assert result == {
        "login": 200,
        "me": 200,
        "username": "grace",
        "logout": 204,
        "after": 401,
        "challenge": 'Bearer realm="auth-service"',
    }


async def test_the_browser_blocks_an_origin_that_is_not_listed(
    tab: OpenClient, server: str, origins: Origins
) -> None:
    sign_up(server, "mallory")
    client = await tab(origins.unlisted)

    blocked = [
        await client.run("seedClient", server, "mallory", PASSWORD),
        await client.run("cookieSession", server, "mallory", PASSWORD),
        await client.run("simpleGet", server),
    ]

    assert blocked == [{"error": "TypeError"}] * 3
    refusals = [text for text in client.console if "blocked by CORS policy" in text]
    assert len(refusals) == 3, client.console
    # The same page from the listed origin is served: the refusal is the origin's.
    assert await (await tab(origins.listed)).run("simpleGet", server) == {"status": 200}
