"""The second factor end to end in a real browser: Debian's Chromium driven by Playwright against
a live hypercorn, with a virtual authenticator (the DevTools protocol's WebAuthn domain) holding
resident keys: a passkey added on the account page, a sign-in with it and no username typed,
the passkey as the second step of a password login; TOTP set up on the account page with the
code computed from the secret the page shows, then a password login with a code.

The server's public URL (the WebAuthn RP ID and origin) is http://localhost:PORT: a browser
accepts localhost as a secure context and as an RP ID, not an IP address (127.0.0.1).

Skipped when /usr/bin/chromium is missing, except under CI=true, where that is a failure.
Screenshots of the account page: with AUTH_UPDATE_SCREENSHOTS=1 they replace the ones in
docs/screenshots/ (shown in the README), otherwise they go to a temporary folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyotp
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    CDPSession,
    ConsoleMessage,
    Page,
    Response,
    ViewportSize,
    expect,
)

from tests.servers import HANG_GUARD_SECONDS, free_port
from tests.system.test_browser import PASSWORD, SCREENSHOTS, browser, sign_up_by_api

__all__ = ["browser"]  # the shared Chromium fixture of test_browser.py

# The browser is shared by the module's tests, so they run on the module's event loop (and on one
# xdist worker: tests/scheduling.py).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VIEWPORT: ViewportSize = {"width": 1000, "height": 800}
HOST = "localhost"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service under hypercorn on a fresh SQLite file; its base URL, http://localhost:PORT,
    which is also its public URL (the passkeys' RP ID and origin)."""
    workdir = tmp_path_factory.mktemp("mfa-e2e-server")
    port = free_port()
    base_url = f"http://{HOST}:{port}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("AUTH_")}
    env.update(
        PYTHONPATH=str(ROOT),
        AUTH_ENV="testing",
        AUTH_PUBLIC_URL=base_url,
        AUTH_COOKIE_SECURE="false",  # plain http on localhost
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
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited early:\n{log_path.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
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


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh profile; fails the test on a CSP violation, a script error, or a request to any
    other host."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    tab = await context.new_page()
    violations: list[str] = []
    errors: list[str] = []
    elsewhere: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    def on_response(response: Response) -> None:
        url = urlsplit(response.url)
        if url.scheme in ("http", "https") and url.hostname != HOST:
            elsewhere.append(response.url)

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("response", on_response)
    try:
        yield tab
    finally:
        await context.close()
    assert violations == []
    assert errors == []
    assert elsewhere == []


async def authenticator(page: Page) -> tuple[CDPSession, str]:
    """A virtual platform authenticator with resident keys and user verification, on the tab."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable")
    added = await cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, str(added["authenticatorId"])


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


async def log_in_with_password(page: Page, server: str, username: str) -> None:
    """The login page's form; stops wherever the login goes (the dashboard, the code step)."""
    await page.goto(f"{server}/login")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    async with page.expect_navigation():
        await page.press("#password", "Enter")


async def log_out(page: Page, server: str) -> None:
    await page.goto(f"{server}/dashboard")
    await page.click("#logout-form button[type=submit]")
    await page.wait_for_url(f"{server}/login")


def code_at(secret: str, steps_ahead: int = 0) -> str:
    """The code of a later 30 s step (accepted with the ±1 step tolerance): never the code an
    earlier step of the test spent, which is refused a second time (RFC 6238 §5.2)."""
    return pyotp.TOTP(secret).at(int(time.time()) + 30 * steps_ahead)


async def test_a_passkey_is_added_signs_in_alone_and_confirms_a_password_login(
    page: Page, server: str
) -> None:
    sign_up_by_api(server.replace(HOST, "127.0.0.1"), "pia")
    cdp, authenticator_id = await authenticator(page)
    await log_in_with_password(page, server, "pia")
    await page.wait_for_url(f"{server}/dashboard")

    await page.click("#account-link")
    await page.wait_for_url(f"{server}/account")
    add = page.locator("#passkey-add")
    await expect(add).to_be_visible()  # the script shows what it drives
    await page.fill("#passkey_name", "Test key")
    await add.focus()
    await page.keyboard.press("Enter")  # keyboard only
    await page.wait_for_url(f"{server}/account?notice=passkey-added")

    await expect(page.locator("#account-notice")).to_be_focused()
    rows = page.locator("#passkey-list tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator(".passkey-name")).to_have_text("Test key")
    await expect(rows.first).to_contain_text("Never")  # not used to log in yet
    stored: dict[str, Any] = await cdp.send(
        "WebAuthn.getCredentials", {"authenticatorId": authenticator_id}
    )
    assert [credential["isResidentCredential"] for credential in stored["credentials"]] == [True]

    # Signed out, then in again with the passkey alone: no username, no password typed.
    await log_out(page, server)
    await page.click("#passkey-login")
    await page.wait_for_url(f"{server}/login/passkey")
    signin = page.locator("#passkey-signin")
    await expect(signin).to_be_visible()
    await expect(signin).to_be_focused()
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{server}/dashboard")
    await expect(page.locator("#welcome")).to_contain_text("You are logged in.")

    # A password login now asks for the second step, which the passkey completes.
    await log_out(page, server)
    await log_in_with_password(page, server, "pia")
    await expect(page.locator("#mfa-title")).to_have_text("Confirm it is you")
    assert await page.locator("#mfa-form").count() == 0  # no TOTP, no recovery codes
    use_passkey = page.locator("#mfa-passkey")
    await expect(use_passkey).to_be_visible()
    await expect(use_passkey).to_be_focused()
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{server}/dashboard")
    await expect(page.locator("#welcome")).to_contain_text("You are logged in.")

    await page.goto(f"{server}/account")
    last_used = rows.first.locator("td").nth(2)
    await expect(last_used).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC$"))
    stored = await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
    assert stored["credentials"][0]["signCount"] >= 2
    await page.locator("#passkeys").evaluate("section => section.scrollIntoView()")
    await screenshot(page, "account-passkeys")


async def test_totp_is_set_up_on_the_account_page_and_asked_at_login(
    page: Page, server: str
) -> None:
    sign_up_by_api(server.replace(HOST, "127.0.0.1"), "tom")
    await log_in_with_password(page, server, "tom")
    await page.wait_for_url(f"{server}/dashboard")
    await page.goto(f"{server}/account")

    await page.click("#totp-setup-form button[type=submit]")
    qr = page.locator("#totp-qr")
    await expect(qr).to_be_visible()
    assert await qr.evaluate("image => image.complete && image.naturalWidth > 0")
    await expect(page.locator("#totp-setup-title")).to_be_focused()
    await page.locator("#totp").evaluate("section => section.scrollIntoView()")
    await screenshot(page, "account-totp-setup")
    secret = (await page.locator("#totp-secret").inner_text()).replace(" ", "")

    await page.press("#totp-setup-title", "Tab")
    await page.keyboard.type(code_at(secret))  # Tab lands on the code field
    await page.keyboard.press("Enter")

    codes = page.locator("#recovery-codes li")
    await expect(codes).to_have_count(10)
    await expect(page.locator("#recovery-codes-title")).to_be_focused()
    await expect(page.locator("#totp-status")).to_contain_text("On")
    await expect(page.locator("#recovery-left")).to_have_text("10 recovery codes left.")

    await log_out(page, server)
    await log_in_with_password(page, server, "tom")
    code = page.locator("#code")
    await expect(code).to_be_focused()
    assert await page.locator("#mfa-passkey-form").count() == 0  # no passkey: no button
    await page.keyboard.type("000000" if code_at(secret, 1) != "000000" else "111111")
    async with page.expect_navigation() as navigation:
        await page.keyboard.press("Enter")
    refused = await navigation.value
    assert refused is not None
    assert refused.status == 401
    await expect(page.locator("#code-error")).to_be_visible()
    await expect(code).to_be_focused()

    await page.keyboard.type(code_at(secret, 1))
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{server}/dashboard")
    await expect(page.locator("#welcome")).to_contain_text("You are logged in.")


async def test_without_javascript_the_passkey_controls_stay_hidden(
    browser: Browser, server: str
) -> None:
    sign_up_by_api(server.replace(HOST, "127.0.0.1"), "nojs")
    context = await browser.new_context(viewport=VIEWPORT, java_script_enabled=False)
    context.set_default_timeout(15_000)
    try:
        tab = await context.new_page()
        await log_in_with_password(tab, server, "nojs")
        await tab.goto(f"{server}/account")
        await expect(tab.locator("#passkey-add-form")).to_be_hidden()
        await expect(tab.locator("#password-form")).to_be_visible()
        await expect(tab.locator("#totp-setup-form button")).to_be_visible()
        await tab.goto(f"{server}/login/passkey")
        await expect(tab.locator("#passkey-signin")).to_be_hidden()
        await expect(tab.get_by_text("Signing in with a passkey needs JavaScript")).to_be_visible()
    finally:
        await context.close()


# What an older Chromium lacks: the script must then convert base64url itself.
WITHOUT_JSON_HELPERS = """
delete PublicKeyCredential.parseCreationOptionsFromJSON;
delete PublicKeyCredential.parseRequestOptionsFromJSON;
delete PublicKeyCredential.prototype.toJSON;
"""


async def test_the_script_converts_itself_where_the_browser_has_no_json_helpers(
    page: Page, server: str
) -> None:
    await page.add_init_script(WITHOUT_JSON_HELPERS)
    sign_up_by_api(server.replace(HOST, "127.0.0.1"), "old-chromium")
    await authenticator(page)
    await log_in_with_password(page, server, "old-chromium")
    await page.goto(f"{server}/account")
    assert await page.evaluate("typeof PublicKeyCredential.parseCreationOptionsFromJSON") == (
        "undefined"
    )

    await page.click("#passkey-add")
    await page.wait_for_url(f"{server}/account?notice=passkey-added")
    await expect(page.locator("#passkey-list tbody tr")).to_have_count(1)
    await expect(page.locator("#passkey-list .passkey-name")).to_have_text("Passkey 1")
    await log_out(page, server)
    await page.goto(f"{server}/login/passkey")
    await page.click("#passkey-signin")
    await page.wait_for_url(f"{server}/dashboard")
    await expect(page.locator("#welcome")).to_contain_text("You are logged in.")
