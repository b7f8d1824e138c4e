"""The pages of the mailed links: a forgotten password, a reset, a verification, and what the login
page and the dashboard offer. A link's GET only shows a form; the form's POST does the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from service.web.state import get_state
from tests.api.test_email_flows import link_in, local, mail_to, outbox_recipients
from tests.api.test_web_pages import PAGE_CSP, SAME_ORIGIN, page_of, set_cookies
from tests.mailbox import SMTPServer
from tests.support import PASSWORD, Client, make_settings, running_app

EVIL_ORIGIN = {"Origin": "https://evil.example"}
ADA = {"name": "Ada", "username": "ada", "email": "ada@example.com", "password": PASSWORD}
NEW_PASSWORD = "a brand new passphrase 42"


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    with SMTPServer() as server:
        yield server


@pytest.fixture
def overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def app(tmp_path: Path, smtp: SMTPServer, overrides: dict[str, Any]) -> AsyncIterator[Quart]:
    values = {"cookie_secure": False, "smtp_url": smtp.url, "public_url": "http://localhost"}
    settings = make_settings(tmp_path, **{**values, **overrides})
    async with running_app(settings) as application:
        yield application


@pytest.fixture
def browser(app: Quart) -> Client:
    return app.test_client()


async def sign_up(browser: Client) -> Any:
    response = await browser.post("/web/signup", form=ADA, headers=SAME_ORIGIN)
    assert response.status_code == 303, await response.get_data(as_text=True)
    return response


async def test_the_login_page_links_to_the_forgotten_password_page(browser: Client) -> None:
    login = await page_of(await browser.get("/login"))
    forgot = await browser.get(str(login.by_id["forgot-password"]["href"]))

    assert login.text["forgot-password"] == "Forgot your password?"
    assert forgot.status_code == 200
    assert forgot.headers["Content-Security-Policy"] == PAGE_CSP
    assert forgot.headers["Cache-Control"] == "no-store"
    page = await page_of(forgot)
    assert page.labels.keys() == {"email"}
    assert page.by_id["email"]["autocomplete"] == "email"
    assert page.by_id["forgot-form"]["action"] == "/web/forgot-password"


async def test_forgot_reset_and_log_in_through_the_pages(browser: Client, smtp: SMTPServer) -> None:
    await sign_up(browser)

    sent = await browser.post(
        "/web/forgot-password", form={"email": "ADA@example.com"}, headers=SAME_ORIGIN
    )

    assert sent.status_code == 200
    assert (await page_of(sent)).text["title"] == "Check your email"
    _, message = await mail_to(smtp, "ada@example.com", 2)
    link = link_in(message, "/reset-password")
    opened = await browser.get(local(link))
    assert opened.status_code == 200
    form = await page_of(opened)
    assert form.by_id["reset-form"]["action"] == "/web/reset-password"
    assert form.by_id["new_password"]["autocomplete"] == "new-password"
    assert form.by_id["reset-username"]["value"] == "ada"
    token = next(str(i["value"]) for i in form.inputs if i.get("name") == "token")

    weak = await browser.post(
        "/web/reset-password",
        form={"token": token, "new_password": "password123"},
        headers=SAME_ORIGIN,
    )
    assert weak.status_code == 422
    weak_page = await page_of(weak)
    assert "most common passwords" in weak_page.text["new_password-error"]
    assert next(i["value"] for i in weak_page.inputs if i.get("name") == "token") == token

    done = await browser.post(
        "/web/reset-password",
        form={"token": token, "new_password": NEW_PASSWORD},
        headers=SAME_ORIGIN,
    )
    assert done.status_code == 200
    assert (await page_of(done)).text["title"] == "Password changed"
    # The session the signup started ended with the reset.
    assert (await browser.get("/dashboard")).status_code == 303
    login = await browser.post("/web/login", form={"username": "ada", "password": NEW_PASSWORD})
    assert (login.status_code, login.headers["Location"]) == (303, "/dashboard")
    again = await browser.get(local(link))
    assert again.status_code == 400
    assert (await page_of(again)).by_id["next"]["href"] == "/forgot-password"


@pytest.mark.parametrize("path", ["/web/forgot-password", "/web/reset-password"])
async def test_link_forms_from_another_origin_are_refused(
    app: Quart, browser: Client, path: str
) -> None:
    response = await browser.post(
        path, form={"email": "ada@example.com", "token": "t"}, headers=EVIL_ORIGIN
    )

    assert response.status_code == 403
    assert (await page_of(response)).text["title"] == "Request refused"
    assert await outbox_recipients(app) == []


async def test_a_bad_reset_link_says_so_and_offers_a_new_one(browser: Client) -> None:
    response = await browser.get("/reset-password?token=not-a-token")

    assert response.status_code == 400
    page = await page_of(response)
    assert page.text["title"] == "This link does not work"
    assert page.by_id["next"]["href"] == "/forgot-password"
    assert (await browser.get("/reset-password")).status_code == 400


async def test_a_forgot_form_with_a_bad_address_marks_the_field(browser: Client) -> None:
    response = await browser.post(
        "/web/forgot-password", form={"email": "not an address"}, headers=SAME_ORIGIN
    )

    assert response.status_code == 422
    page = await page_of(response)
    assert page.text["email-error"] == "Enter a valid email address, like name@example.com."
    assert page.by_id["email"]["value"] == "not an address"


async def test_the_verification_page_confirms_only_on_its_post(
    app: Quart, browser: Client, smtp: SMTPServer
) -> None:
    await sign_up(browser)
    [message] = await mail_to(smtp, "ada@example.com", 1)
    link = link_in(message, "/verify-email")

    opened = await browser.get(local(link))
    assert opened.status_code == 200
    form = await page_of(opened)
    assert "ada@example.com" in form.text["verify-address"]
    dashboard = await page_of(await browser.get("/dashboard"))
    assert dashboard.text["email-status"] == "Not yet"
    token = next(str(i["value"]) for i in form.inputs if i.get("name") == "token")
    refused = await browser.post("/web/verify-email", form={"token": token}, headers=EVIL_ORIGIN)
    assert refused.status_code == 403

    done = await browser.post("/web/verify-email", form={"token": token}, headers=SAME_ORIGIN)

    assert done.status_code == 200
    assert (await page_of(done)).text["title"] == "Email verified"
    dashboard = await page_of(await browser.get("/dashboard"))
    assert dashboard.text["email-status"] == "Yes"
    assert "resend-form" not in dashboard.by_id
    again = await browser.post("/web/verify-email", form={"token": token}, headers=SAME_ORIGIN)
    assert again.status_code == 400


async def test_the_dashboard_resends_the_link_with_the_session_csrf_token(
    browser: Client, smtp: SMTPServer
) -> None:
    await sign_up(browser)
    dashboard = await page_of(await browser.get("/dashboard"))
    assert dashboard.by_id["resend-form"]["action"] == "/web/verify-email/resend"
    csrf = next(
        str(i["value"]) for i in dashboard.inputs if i.get("name") == "csrf_token" and i["value"]
    )

    forged = await browser.post(
        "/web/verify-email/resend", form={"csrf_token": "guess"}, headers=SAME_ORIGIN
    )
    resent = await browser.post(
        "/web/verify-email/resend", form={"csrf_token": csrf}, headers=SAME_ORIGIN
    )

    assert forged.status_code == 403
    assert resent.status_code == 200
    assert (await page_of(resent)).text["title"] == "Check your email"
    first, second = await mail_to(smtp, "ada@example.com", 2)
    assert link_in(first, "/verify-email") != link_in(second, "/verify-email")


@pytest.mark.parametrize("overrides", [{"require_verified_email": True}])
async def test_with_verification_required_the_signup_page_logs_in_only_after_it(
    browser: Client, smtp: SMTPServer
) -> None:
    response = await browser.post("/web/signup", form=ADA, headers=SAME_ORIGIN)

    assert response.status_code == 201
    assert "Set-Cookie" not in response.headers
    assert (await page_of(response)).text["title"] == "Check your email"
    refused = await browser.post("/web/login", form={"username": "ada", "password": PASSWORD})
    assert refused.status_code == 403
    assert set_cookies(refused) == {}
    [message] = await mail_to(smtp, "ada@example.com", 1)
    token = link_in(message, "/verify-email").split("token=", 1)[1]
    await browser.post("/web/verify-email", form={"token": token}, headers=SAME_ORIGIN)
    login = await browser.post("/web/login", form={"username": "ada", "password": PASSWORD})
    assert login.status_code == 303


@pytest.mark.parametrize("overrides", [{"mail_enabled": False, "smtp_url": None}])
async def test_with_mail_off_the_pages_say_so(app: Quart, browser: Client) -> None:
    assert get_state(app).settings.mail_enabled is False
    for path in ("/forgot-password", "/reset-password?token=t", "/verify-email?token=t"):
        response = await browser.get(path)
        assert response.status_code == 503, path
        assert (await page_of(response)).text["title"] == "Not available"
    await sign_up(browser)
    assert "resend-form" not in (await page_of(await browser.get("/dashboard"))).by_id
