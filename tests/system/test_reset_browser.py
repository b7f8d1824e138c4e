"""The password-reset flow in a real browser: Debian's Chromium (Playwright) against a live
hypercorn that sends its mail to a real SMTP server (aiosmtpd), whose message gives the link.

Skipped when /usr/bin/chromium is missing, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.mailbox import Received, SMTPServer
from tests.servers import HANG_GUARD_SECONDS, free_port

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"CI=true but {CHROMIUM} is missing: the browser tests cannot run", pytrace=False
        )
    pytest.skip(f"{CHROMIUM} is missing", allow_module_level=True)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase 42"


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    with SMTPServer() as server:
        yield server


@pytest.fixture
def server(tmp_path: Path, smtp: SMTPServer) -> Iterator[str]:
    """The service under hypercorn, mailing through ``smtp``; its base URL (its public URL)."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("AUTH_")}
    env.update(
        PYTHONPATH=str(ROOT),
        AUTH_ENV="testing",
        AUTH_PUBLIC_URL=base_url,
        AUTH_SMTP_URL=smtp.url,
        AUTH_COOKIE_SECURE="false",
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
        AUTH_ARGON2_PARALLELISM="1",
    )
    log_path = tmp_path / "server.log"
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
            cwd=tmp_path,
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


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    context.set_default_timeout(15_000)
    try:
        yield await context.new_page()
    finally:
        await context.close()


def reset_link(message: Received, server: str) -> str:
    [link] = [link for link in message.links() if link.startswith(f"{server}/reset-password?")]
    return link


async def test_forgot_mail_link_new_password_log_in(
    page: Page, server: str, smtp: SMTPServer
) -> None:
    async with httpx.AsyncClient(base_url=server) as api:
        signup = await api.post(
            "/signup",
            json={"username": "rosa", "email": "rosa@example.com", "password": PASSWORD},
        )
    assert signup.status_code == 201

    await page.goto(f"{server}/login")
    await page.click("#forgot-password")
    await page.wait_for_url(f"{server}/forgot-password")
    await page.fill("#email", "rosa@example.com")
    await page.click("#forgot-form button[type=submit]")
    await expect(page.locator("#title")).to_have_text("Check your email")

    _, message = await smtp.mailbox.wait_for(2)  # the signup's verification link, then this
    assert message.recipients == ("rosa@example.com",)
    await page.goto(reset_link(message, server))
    await expect(page.locator("#new_password")).to_be_focused()
    await page.fill("#new_password", NEW_PASSWORD)
    await page.click("#reset-form button[type=submit]")
    await expect(page.locator("#title")).to_have_text("Password changed")

    await page.click("#next")
    await page.wait_for_url(f"{server}/login")
    await page.fill("#username", "rosa")
    await page.fill("#password", NEW_PASSWORD)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_url(f"{server}/dashboard")
    await expect(page.locator("#welcome")).to_have_text("Welcome rosa! You are logged in.")
    # Following the link proved the address.
    await expect(page.locator("#email-status")).to_have_text("Yes")
