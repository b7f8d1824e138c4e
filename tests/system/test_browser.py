"""The pages in a real browser: Debian's Chromium driven by Playwright against a live hypercorn.

Skipped when /usr/bin/chromium is missing, except under CI=true, where that is a failure.
Screenshots are taken on every run; with AUTH_UPDATE_SCREENSHOTS=1 they replace the ones in
docs/screenshots/ (shown in the README), otherwise they go to a temporary folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Response,
    Route,
    ViewportSize,
    async_playwright,
    expect,
)

from tests.servers import HANG_GUARD_SECONDS, free_port

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"CI=true but {CHROMIUM} is missing: the browser tests cannot run", pytrace=False
        )
    pytest.skip(f"{CHROMIUM} is missing", allow_module_level=True)

# The browser is shared by the module's tests, so they run on the module's event loop (and on one
# xdist worker: tests/scheduling.py).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("AUTH_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "auth-service-screenshots"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
# The docs pages are also opened under a host name that is not loopback (Swagger UI treats
# localhost and 127.0.0.1 specially), proxied to the server by the browser context itself.
DOCS_ORIGIN = "http://docs.example.test"
PASSWORD = "correct horse battery staple"

# The attacker's page, on another port: its forms post to the service as soon as it loads.
FORGED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Win a prize</title></head>
<body>
<form method="post" action="{action}">{fields}</form>
<script>document.forms[0].submit();</script>
</body></html>
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service under hypercorn, on a fresh SQLite file; its base URL."""
    workdir = tmp_path_factory.mktemp("e2e-server")
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("AUTH_")}
    base_url = f"http://127.0.0.1:{port}"
    env.update(
        PYTHONPATH=str(ROOT),
        AUTH_ENV="testing",
        AUTH_PUBLIC_URL=base_url,  # the document's servers and tokenUrl: Swagger UI calls them
        AUTH_COOKIE_SECURE="false",  # plain http on 127.0.0.1
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'auth.db'}",
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
        AUTH_ARGON2_PARALLELISM="1",
    )
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hypercorn",
                "-c",
                str(ROOT / "hypercorn.toml"),
                "--bind",
                f"127.0.0.1:{port}",
                "service.asgi:app",
            ],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # Until it answers or exits: a start that is merely slow (a busy machine) is waited for.
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited early:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base_url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server hung in start-up:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def attacker(server: str) -> Iterator[str]:
    """Another origin (same host, other port) serving forged, auto-submitting forms."""
    pages = {
        "/logout.html": FORGED_PAGE.format(
            action=f"{server}/web/logout",
            fields='<input name="csrf_token" value="guessed">',
        ),
        "/session.html": FORGED_PAGE.format(
            action=f"{server}/session",
            fields=f'<input name="username" value="mallory2">'
            f'<input name="password" value="{PASSWORD}">',
        ),
        "/login.html": FORGED_PAGE.format(
            action=f"{server}/web/login",
            fields=f'<input name="username" value="mallory">'
            f'<input name="password" value="{PASSWORD}">',
        ),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path)
            if body is None:
                self.send_error(404)
                return
            data = body.encode()
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
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium for the module; every test gets its own context (profile)."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh profile (no cookies); fails the test on any Content-Security-Policy violation."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    tab = await context.new_page()
    violations: list[str] = []
    elsewhere: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text:
            violations.append(text)

    def on_response(response: Response) -> None:
        # Nothing is fetched from elsewhere (no CDN); a request the CSP blocks gets no response.
        url = urlsplit(response.url)
        if url.scheme in ("http", "https") and url.hostname != "127.0.0.1":
            elsewhere.append(response.url)

    tab.on("console", on_console)
    tab.on("response", on_response)
    try:
        yield tab
    finally:
        await context.close()
    assert violations == []
    assert elsewhere == []


def sign_up_by_api(server: str, username: str, name: str | None = None) -> None:
    body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    if name is not None:
        body["name"] = name
    response = httpx.post(f"{server}/signup", json=body)
    assert response.status_code == 201, response.text


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


async def log_in(page: Page, server: str, username: str) -> None:
    await page.goto(f"{server}/login")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_url(f"{server}/dashboard")


async def test_register_reload_logout(page: Page, server: str) -> None:
    await page.goto(f"{server}/signup")
    await expect(page.locator("#name")).to_be_focused()
    button = page.locator("#signup-form button[type=submit]")
    # The stylesheet applied: the button is not the browser's default grey.
    assert await button.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(29, 78, 216)"
    await screenshot(page, "signup")

    await page.fill("#name", "Ada Lovelace")
    await page.fill("#username", "ada")
    await page.fill("#email", "ada@example.com")
    await page.fill("#password", PASSWORD)
    await button.click()

    await page.wait_for_url(f"{server}/dashboard")
    welcome = page.locator("#welcome")
    await expect(welcome).to_have_text("Welcome Ada Lovelace! You are logged in.")
    await screenshot(page, "dashboard")

    await page.reload()
    await expect(welcome).to_have_text("Welcome Ada Lovelace! You are logged in.")
    await page.goto(f"{server}/")
    await page.wait_for_url(f"{server}/dashboard")

    await page.click("#logout-form button[type=submit]")
    await page.wait_for_url(f"{server}/login")
    await expect(page.locator("#username")).to_be_focused()
    await screenshot(page, "login")
    cookies = {cookie["name"] for cookie in await page.context.cookies()}
    assert cookies.isdisjoint({"access_token_cookie", "csrf_access_token"})

    await page.goto(f"{server}/dashboard")
    await page.wait_for_url(f"{server}/login")


async def test_a_wrong_password_is_shown_on_the_page(page: Page, server: str) -> None:
    sign_up_by_api(server, "grace")
    await page.goto(f"{server}/login")
    await page.fill("#username", "grace")
    await page.fill("#password", "not my password")

    async with page.expect_navigation() as navigation:
        await page.click("#login-form button[type=submit]")

    response = await navigation.value
    assert response is not None
    assert response.status == 401
    await expect(page.locator("#password-error")).to_have_text("The username or password is wrong.")
    await expect(page.locator("#password")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#password")).to_be_focused()
    await expect(page.locator("#password")).to_have_value("")
    await expect(page.locator("#username")).to_have_value("grace")
    await screenshot(page, "login-error")


async def test_forms_posted_from_another_origin_are_refused(
    page: Page, server: str, attacker: str
) -> None:
    sign_up_by_api(server, "victim", name="Victim")
    sign_up_by_api(server, "mallory")
    await log_in(page, server, "victim")

    for forged, target in (("logout.html", "/web/logout"), ("login.html", "/web/login")):
        async with page.expect_response(f"{server}{target}") as answer:
            await page.goto(f"{attacker}/{forged}")
        response = await answer.value
        # SameSite=Lax cookies do travel between ports of one host: the Origin check refuses it.
        request_headers = await response.request.all_headers()
        assert request_headers["origin"] == attacker
        assert "access_token_cookie=" in request_headers.get("cookie", "")
        assert response.status == 403
        await expect(page.locator("#title")).to_have_text("Request refused")

    await page.goto(f"{server}/dashboard")
    await expect(page.locator("#welcome")).to_have_text("Welcome Victim! You are logged in.")


async def test_a_foreign_page_cannot_log_the_browser_into_another_account(
    page: Page, server: str, attacker: str
) -> None:
    sign_up_by_api(server, "victim2", name="Victim Two")
    sign_up_by_api(server, "mallory2")
    await log_in(page, server, "victim2")

    async with page.expect_response(f"{server}/session") as answer:
        await page.goto(f"{attacker}/session.html")
    response = await answer.value

    request_headers = await response.request.all_headers()
    assert request_headers["origin"] == attacker
    assert response.status == 403
    assert (await response.json())["code"] == "CSRF_FAILED"
    await page.goto(f"{server}/dashboard")
    await expect(page.locator("#welcome")).to_have_text("Welcome Victim Two! You are logged in.")


async def test_swagger_ui_authorizes_with_the_password_flow(page: Page, server: str) -> None:
    sign_up_by_api(server, "swagger-user")
    await page.goto(f"{server}/docs")

    await page.click(".auth-wrapper button.authorize")
    await page.fill("#oauth_username", "swagger-user")
    await page.fill("#oauth_password", PASSWORD)
    oauth2 = page.locator(".auth-container").filter(has_text="oauth2 (OAuth2, password)")
    await oauth2.locator("button.authorize").click()
    await expect(oauth2.locator("h6")).to_have_text("Authorized")
    await oauth2.locator("button.btn-done").click()

    operation = page.locator("#operations-users-get_protected")
    await operation.locator(".opblock-summary").first.click()
    await operation.locator("button.execute").click()

    live = operation.locator(".live-responses-table .response")
    await expect(live.locator(".response-col_status")).to_have_text("200")
    await expect(live.locator(".response-col_description pre").first).to_contain_text(
        '"username": "swagger-user"'
    )
    await operation.evaluate("element => element.scrollIntoView()")
    await screenshot(page, "swagger-ui")


async def test_redoc_renders_the_api(page: Page, server: str) -> None:
    await page.goto(f"{server}/redocs")

    await expect(page.locator(".api-info h1")).to_contain_text("auth-service")
    await expect(page.get_by_text("/protected").first).to_be_attached()
    await screenshot(page, "redoc")


@pytest.mark.parametrize(
    ("path", "rendered"), [("/docs", ".opblock-summary"), ("/redocs", ".api-info h1")]
)
async def test_docs_pages_ask_no_other_host_and_log_no_error(
    browser: Browser, server: str, path: str, rendered: str
) -> None:
    """Every request the page makes is recorded, with the CSP bypassed so that nothing is
    blocked before it shows: each one goes to the page's own origin, and the console stays
    free of errors. (With the CSP on, the ``page`` fixture's tests see no violation.)"""
    context = await browser.new_context(viewport=VIEWPORT, bypass_csp=True)
    context.set_default_timeout(15_000)
    requested: list[str] = []
    errors: list[str] = []

    async def handle(route: Route) -> None:
        url = route.request.url
        requested.append(url)
        if url.startswith(f"{DOCS_ORIGIN}/"):
            answer = await route.fetch(url=server + url.removeprefix(DOCS_ORIGIN))
            await route.fulfill(response=answer)
        else:
            await route.abort()  # the test machine has no network; the URL is recorded

    await context.route("**/*", handle)
    tab = await context.new_page()
    tab.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await tab.goto(f"{DOCS_ORIGIN}{path}")
        await expect(tab.locator(rendered).first).to_be_visible()
        await tab.wait_for_load_state("networkidle")
        if path == "/redocs":
            # The sidebar's "API docs by Redocly" image (a CDN address in ReDoc's bundle).
            logo = tab.locator("img[alt='redocly logo']")
            await expect(logo).to_have_attribute("src", re.compile(r"^data:image/svg\+xml,"))
            assert await logo.evaluate("image => image.complete && image.naturalWidth > 0")
    finally:
        await context.close()

    elsewhere = [url for url in requested if not url.startswith(f"{DOCS_ORIGIN}/")]
    assert elsewhere == []
    assert f"{DOCS_ORIGIN}/openapi.json" in requested
    assert errors == []
