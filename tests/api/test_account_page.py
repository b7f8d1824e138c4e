"""The account page (``/account``) and the login page's second step, through the Quart test
client on SQLite and PostgreSQL: the sections, their forms (each a POST with the session's
CSRF token, refused from another site), TOTP set up and confirmed with the code computed from
the secret the page shows, and a password login that goes on to the code step."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pyotp
import pytest
from quart import Quart

from service.store.models import Passkey
from service.store.unit_of_work import unit_of_work
from service.web.routes import pages
from service.web.state import get_state
from tests.api.test_web_pages import EVIL_ORIGIN, SAME_ORIGIN, Page, page_of, set_cookies
from tests.support import PASSWORD, Client, SettingsFactory, running_app

ADA = {"name": "Ada", "username": "ada", "email": "ada@example.com", "password": PASSWORD}
NEW_PASSWORD = "a brand new passphrase 42"
SCRIPT_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
QR_PAGE_CSP = SCRIPT_PAGE_CSP.replace("img-src 'self'", "img-src 'self' data:")


@pytest.fixture
async def app(settings_factory: SettingsFactory) -> AsyncIterator[Quart]:
    # The test client speaks plain http, where a browser would not send Secure cookies.
    settings = settings_factory(cookie_secure=False, public_url="http://localhost")
    async with running_app(settings) as application:
        yield application


@pytest.fixture
def browser(app: Quart) -> Client:
    return app.test_client()


async def sign_up(browser: Client) -> None:
    response = await browser.post("/web/signup", form=ADA, headers=SAME_ORIGIN)
    assert response.status_code == 303, await response.get_data(as_text=True)


async def account(browser: Client) -> Page:
    response = await browser.get("/account")
    assert response.status_code == 200, response.headers.get("Location")
    return await page_of(response)


async def csrf_of(browser: Client) -> str:
    token = (await account(browser)).by_id["logout-csrf"]["value"]
    assert token
    return token


async def post(browser: Client, path: str, **fields: str) -> Any:
    """A form of the account page, with the session's CSRF token."""
    form = {"csrf_token": await csrf_of(browser), **fields}
    return await browser.post(path, form=form, headers=SAME_ORIGIN)


def secret_of(page: Page) -> str:
    return page.text["totp-secret"].replace(" ", "")


def code_at(secret: str, steps_ahead: int = 0) -> str:
    """The code of a later 30 s step: accepted with the ±1 step tolerance, and never the code
    an earlier request of the test spent (a code is accepted once)."""
    return pyotp.TOTP(secret).at(int(time.time()) + 30 * steps_ahead)


def wrong_code(secret: str) -> str:
    valid = {code_at(secret, step) for step in range(-2, 4)}
    return next(code for code in ("000000", "111111", "222222") if code not in valid)


def recovery_codes(page: Page) -> list[str]:
    return re.findall(r"<li><code>([^<]+)</code></li>", page.html)


async def turn_on_totp(browser: Client) -> tuple[str, list[str]]:
    setup = await page_of(await post(browser, "/web/account/totp/setup"))
    secret = secret_of(setup)
    confirmed = await post(browser, "/web/account/totp/confirm", totp_code=code_at(secret))
    assert confirmed.status_code == 200
    return secret, recovery_codes(await page_of(confirmed))


async def log_out(browser: Client) -> None:
    response = await post(browser, "/web/logout")
    assert response.status_code == 303


async def test_without_a_session_the_account_page_and_its_forms_go_to_login(
    browser: Client,
) -> None:
    page = await browser.get("/account")
    form = await browser.post(
        "/web/account/password",
        form={"csrf_token": "x", "current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=SAME_ORIGIN,
    )

    assert page.status_code == 303
    assert page.headers["Location"] == "/login"
    assert page.headers["Cache-Control"] == "no-store"
    assert form.status_code == 303
    assert form.headers["Location"] == "/login"


async def test_the_account_page_shows_its_sections_under_a_script_csp(browser: Client) -> None:
    await sign_up(browser)
    dashboard = await page_of(await browser.get("/dashboard"))

    response = await browser.get(str(dashboard.by_id["account-link"]["href"]))

    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == SCRIPT_PAGE_CSP
    assert response.headers["Cache-Control"] == "no-store"
    page = await page_of(response)
    for section in ("sessions", "password", "totp", "recovery", "passkeys"):
        assert page.by_id[section]["tag"] == "section"
    assert page.labels.keys() >= {"current_password", "new_password", "passkey_name"}
    assert page.by_id["current_password"]["autocomplete"] == "current-password"
    assert page.by_id["new_password"]["autocomplete"] == "new-password"
    assert page.by_id["password-form"]["action"] == "/web/account/password"
    assert page.by_id["totp-setup-form"]["action"] == "/web/account/totp/setup"
    assert page.text["recovery-left"].startswith("You get 10 recovery codes")
    assert page.text["passkey-none"] == "No passkey yet."
    # Without the script, the passkey form stays hidden; with it, it runs this service's file.
    assert "hidden" in page.by_id["passkey-add-form"]
    script = page.by_id["passkeys-script"]
    assert script["src"] == f"/static/passkeys.js?v={pages.SCRIPT_VERSIONS['passkeys.js']}"
    html = page.html
    assert not re.search(r"<script(?![^>]*\ssrc=)", html, re.IGNORECASE)
    assert not re.search(r"\sstyle\s*=", html, re.IGNORECASE)
    assert not re.search(r"\son\w+\s*=", html, re.IGNORECASE)
    # One session, this one: no "Sign out" of it, only "Log out".
    rows = [row for row in page.by_id if row.startswith("session-") and row != "session-list"]
    assert len(rows) == 1
    assert "current" in str(page.by_id[rows[0]].get("class"))
    assert "revoke-form" not in html


async def test_the_script_is_served_by_the_service(browser: Client) -> None:
    version = pages.SCRIPT_VERSIONS["passkeys.js"]

    response = await browser.get(f"/static/passkeys.js?v={version}")

    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    body = await response.get_data(as_text=True)
    assert "navigator.credentials.create" in body
    assert "parseCreationOptionsFromJSON" in body
    assert "X-CSRF-Token" in body


async def test_a_session_is_signed_out_from_the_page(browser: Client, app: Quart) -> None:
    await sign_up(browser)
    other = app.test_client()
    login = await other.post("/login", json={"username": "ada", "password": PASSWORD})
    pair = await login.get_json()
    bearer = {"Authorization": f"Bearer {pair['access_token']}"}
    listed = await account(browser)
    other_id = next(
        element_id.removeprefix("session-")
        for element_id, element in listed.by_id.items()
        if element_id.startswith("session-")
        and element_id != "session-list"
        and "current" not in str(element.get("class"))
    )
    assert (await other.get("/me", headers=bearer)).status_code == 200

    response = await post(browser, "/web/account/sessions/revoke", session_id=other_id)

    assert response.status_code == 200
    page = await page_of(response)
    assert page.text["account-notice-text"].startswith("That session is signed out")
    assert "autofocus" in page.by_id["account-notice"]
    assert f"session-{other_id}" not in page.by_id
    assert (await other.get("/me", headers=bearer)).status_code == 401
    assert (await browser.get("/account")).status_code == 200


async def test_the_password_is_changed_on_the_page(browser: Client, app: Quart) -> None:
    await sign_up(browser)

    wrong = await post(
        browser,
        "/web/account/password",
        current_password="not my password",
        new_password=NEW_PASSWORD,
    )
    weak = await post(
        browser, "/web/account/password", current_password=PASSWORD, new_password="short"
    )
    changed = await post(
        browser, "/web/account/password", current_password=PASSWORD, new_password=NEW_PASSWORD
    )

    assert wrong.status_code == 401
    wrong_page = await page_of(wrong)
    assert wrong_page.text["current_password-error"] == "The current password is wrong."
    assert "autofocus" in wrong_page.by_id["current_password"]
    assert "value" not in wrong_page.by_id["current_password"]
    assert weak.status_code == 422
    weak_page = await page_of(weak)
    assert "new_password-error" in weak_page.text
    assert "autofocus" in weak_page.by_id["new_password"]
    assert changed.status_code == 200
    page = await page_of(changed)
    assert page.text["account-notice-text"] == (
        "Your password is changed. Every other session has ended."
    )
    other = app.test_client()
    old = await other.post("/login", json={"username": "ada", "password": PASSWORD})
    new = await other.post("/login", json={"username": "ada", "password": NEW_PASSWORD})
    assert (old.status_code, new.status_code) == (401, 200)
    assert (await browser.get("/account")).status_code == 200  # this session stays


async def test_a_session_that_is_not_fresh_is_told_to_log_in_again(browser: Client) -> None:
    await sign_up(browser)
    csrf = await csrf_of(browser)
    # A refreshed access token is not fresh (only a login's is).
    refreshed = await browser.post("/refresh", headers={**SAME_ORIGIN, "X-CSRF-Token": csrf})
    assert refreshed.status_code == 200, await refreshed.get_data(as_text=True)

    response = await post(
        browser, "/web/account/password", current_password=PASSWORD, new_password=NEW_PASSWORD
    )
    setup = await post(browser, "/web/account/totp/setup")
    delete = await post(browser, "/web/account/passkeys/delete", passkey_id=str(uuid.uuid4()))

    for answer in (response, setup, delete):
        assert answer.status_code == 401
        page = await page_of(answer)
        assert page.by_id["account-notice"]["role"] == "alert"
        assert "autofocus" in page.by_id["account-notice"]
        assert page.by_id["login-again"]["href"] == "/login"
        assert "totp-secret" not in page.by_id


async def test_the_forms_need_the_csrf_field_and_this_site(browser: Client) -> None:
    await sign_up(browser)
    csrf = await csrf_of(browser)
    path = "/web/account/totp/setup"

    missing = await browser.post(path, form={}, headers=SAME_ORIGIN)
    wrong = await browser.post(path, form={"csrf_token": "guessed"}, headers=SAME_ORIGIN)
    cross_site = await browser.post(path, form={"csrf_token": csrf}, headers=EVIL_ORIGIN)
    cross_site_revoke = await browser.post(
        "/web/account/sessions/revoke",
        form={"csrf_token": csrf, "session_id": str(uuid.uuid4())},
        headers=EVIL_ORIGIN,
    )

    for response in (missing, wrong, cross_site, cross_site_revoke):
        assert response.status_code == 403
        assert (await page_of(response)).text["title"] == "Request refused"
    page = await account(browser)
    assert page.text["totp-status"].startswith("Off")


async def test_totp_is_set_up_and_confirmed_on_the_page(browser: Client) -> None:
    await sign_up(browser)

    setup = await post(browser, "/web/account/totp/setup")

    assert setup.status_code == 200
    assert setup.headers["Content-Security-Policy"] == QR_PAGE_CSP
    page = await page_of(setup)
    assert str(page.by_id["totp-qr"]["src"]).startswith("data:image/svg+xml;base64,")
    assert page.by_id["totp-qr"]["alt"]
    assert "autofocus" in page.by_id["totp-setup-title"]
    assert page.by_id["totp-confirm-form"]["action"] == "/web/account/totp/confirm"
    assert page.by_id["totp_code"]["autocomplete"] == "one-time-code"
    secret = secret_of(page)

    wrong = await post(browser, "/web/account/totp/confirm", totp_code=wrong_code(secret))
    assert wrong.status_code == 401
    wrong_page = await page_of(wrong)
    assert wrong_page.text["totp_code-error"]
    assert "autofocus" in wrong_page.by_id["totp_code"]
    assert "totp-secret" not in wrong_page.by_id  # shown once; "start again" makes a new one
    assert "totp-setup-form" in wrong_page.by_id

    confirmed = await post(browser, "/web/account/totp/confirm", totp_code=code_at(secret))

    assert confirmed.status_code == 200
    done = await page_of(confirmed)
    codes = recovery_codes(done)
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert "autofocus" in done.by_id["recovery-codes-title"]
    assert done.text["totp-status"].startswith("On")
    assert done.text["recovery-left"] == "10 recovery codes left."
    assert confirmed.headers["Content-Security-Policy"] == SCRIPT_PAGE_CSP
    again = await account(browser)
    assert recovery_codes(again) == []  # shown once
    assert "totp-disable-form" in again.by_id


async def test_new_recovery_codes_replace_the_old_ones(browser: Client) -> None:
    await sign_up(browser)
    _, first = await turn_on_totp(browser)

    response = await post(browser, "/web/account/recovery-codes")

    assert response.status_code == 200
    page = await page_of(response)
    second = recovery_codes(page)
    assert len(second) == 10
    assert set(second).isdisjoint(first)
    assert page.text["account-notice-text"].startswith("Here is a new set of recovery codes")
    assert page.text["recovery-left"] == "10 recovery codes left."


async def test_a_password_login_goes_on_to_the_code_step(browser: Client) -> None:
    await sign_up(browser)
    secret, _ = await turn_on_totp(browser)
    await log_out(browser)

    step = await browser.post(
        "/web/login", form={"username": "ada", "password": PASSWORD}, headers=SAME_ORIGIN
    )

    assert step.status_code == 200
    assert "Set-Cookie" not in step.headers
    assert step.headers["Content-Security-Policy"] == SCRIPT_PAGE_CSP
    page = await page_of(step)
    assert page.by_id["mfa-form"]["action"] == "/web/login/mfa"
    assert "autofocus" in page.by_id["code"]
    assert page.by_id["code"]["autocomplete"] == "one-time-code"
    assert "mfa-passkey-form" not in page.by_id  # no passkey: no passkey button
    mfa_token = next(field["value"] for field in page.inputs if field["name"] == "mfa_token")
    assert mfa_token

    wrong = await browser.post(
        "/web/login/mfa",
        form={"mfa_token": mfa_token, "methods": "totp recovery_code", "code": wrong_code(secret)},
        headers=SAME_ORIGIN,
    )
    assert wrong.status_code == 401
    assert "Set-Cookie" not in wrong.headers
    wrong_page = await page_of(wrong)
    assert wrong_page.text["code-error"]
    assert "autofocus" in wrong_page.by_id["code"]
    assert mfa_token in [field["value"] for field in wrong_page.inputs]

    done = await browser.post(
        "/web/login/mfa",
        form={"mfa_token": mfa_token, "methods": "totp recovery_code", "code": code_at(secret, 1)},
        headers=SAME_ORIGIN,
    )

    assert done.status_code == 303
    assert done.headers["Location"] == "/dashboard"
    assert {"access_token_cookie", "csrf_access_token"} <= set_cookies(done).keys()
    assert (await browser.get("/account")).status_code == 200


async def test_a_recovery_code_logs_in_and_says_how_many_are_left(browser: Client) -> None:
    await sign_up(browser)
    _, codes = await turn_on_totp(browser)
    await log_out(browser)
    step = await page_of(
        await browser.post(
            "/web/login", form={"username": "ada", "password": PASSWORD}, headers=SAME_ORIGIN
        )
    )
    mfa_token = next(field["value"] for field in step.inputs if field["name"] == "mfa_token")
    assert mfa_token

    response = await browser.post(
        "/web/login/mfa",
        form={"mfa_token": mfa_token, "code": codes[0]},
        headers=SAME_ORIGIN,
    )

    assert response.status_code == 200
    assert "access_token_cookie" in set_cookies(response)
    page = await page_of(response)
    assert "9 recovery codes left" in page.text["message"]
    assert page.by_id["next"]["href"] == "/account"
    assert (await account(browser)).text["recovery-left"] == "9 recovery codes left."


async def test_the_code_step_refuses_a_post_from_another_site(browser: Client) -> None:
    response = await browser.post(
        "/web/login/mfa", form={"mfa_token": "x", "code": "123456"}, headers=EVIL_ORIGIN
    )

    assert response.status_code == 403
    assert (await page_of(response)).text["title"] == "Request refused"


async def add_passkey_row(app: Quart, name: str) -> uuid.UUID:
    """A stored passkey (no authenticator: its rename and deletion are what is tested here)."""
    database = get_state(app).accounts.database
    async with unit_of_work(database, write=True) as uow:
        user = await uow.users.by_login("ada")
        assert user is not None
        passkey = Passkey(
            user_pk=user.pk,
            credential_id=uuid.uuid4().bytes,
            public_key=b"not a real key",
            sign_count=0,
            transports=["internal"],
            name=name,
        )
        uow.session.add(passkey)
        await uow.session.flush()
        passkey_id = passkey.id
        await uow.commit()
    await get_state(app).accounts.changed()
    return passkey_id


async def test_a_passkey_is_renamed_and_deleted_on_the_page(browser: Client, app: Quart) -> None:
    await sign_up(browser)
    passkey_id = await add_passkey_row(app, "Old laptop")
    listed = await account(browser)
    assert listed.text[f"passkey-{passkey_id}"].strip().startswith("Old laptop")
    assert listed.labels.keys() >= {f"passkey-name-{passkey_id}"}

    renamed = await post(
        browser, "/web/account/passkeys/rename", passkey_id=str(passkey_id), name="Work laptop"
    )

    assert renamed.status_code == 200
    page = await page_of(renamed)
    assert page.text["account-notice-text"] == "The passkey is now called “Work laptop”."
    assert page.by_id[f"passkey-name-{passkey_id}"]["value"] == "Work laptop"

    deleted = await post(browser, "/web/account/passkeys/delete", passkey_id=str(passkey_id))

    assert deleted.status_code == 200
    page = await page_of(deleted)
    assert f"passkey-{passkey_id}" not in page.by_id
    assert page.text["passkey-none"] == "No passkey yet."


async def test_the_login_page_offers_a_passkey_sign_in(browser: Client) -> None:
    login = await page_of(await browser.get("/login"))

    response = await browser.get(str(login.by_id["passkey-login"]["href"]))

    assert login.text["passkey-login"] == "Sign in with a passkey"
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == SCRIPT_PAGE_CSP
    assert response.headers["Cache-Control"] == "no-store"
    page = await page_of(response)
    button = page.by_id["passkey-signin"]
    assert button["tag"] == "button"
    assert "hidden" in button  # shown by the script only
    assert button["data-options-url"] == "/passkeys/login/options"
    assert button["data-url"] == "/passkeys/login"
    assert "passkeys-script" in page.by_id
    assert "username" not in page.by_id
    assert "password" not in page.by_id


async def test_the_code_step_of_a_user_with_a_passkey_offers_it(
    browser: Client, app: Quart
) -> None:
    await sign_up(browser)
    await add_passkey_row(app, "Laptop")
    await log_out(browser)

    step = await browser.post(
        "/web/login", form={"username": "ada", "password": PASSWORD}, headers=SAME_ORIGIN
    )

    assert step.status_code == 200
    page = await page_of(step)
    assert "mfa-form" not in page.by_id  # no TOTP and no recovery codes: no code field
    form = page.by_id["mfa-passkey-form"]
    assert form["action"] == "/web/login/mfa"
    assert form["data-options-url"] == "/passkeys/login/options"
    assert "hidden" in form
    names = {field["name"] for field in page.inputs}
    assert names == {"mfa_token", "methods", "credential"}

    unreadable = await browser.post(
        "/web/login/mfa",
        form={
            "mfa_token": next(f["value"] or "" for f in page.inputs if f["name"] == "mfa_token"),
            "methods": "passkey",
            "credential": "not json",
        },
        headers=SAME_ORIGIN,
    )
    assert unreadable.status_code == 422
    assert "Set-Cookie" not in unreadable.headers
    again = await page_of(unreadable)
    assert again.text["form-message"] == "The passkey's answer could not be read; try again."
    assert "mfa-passkey-form" in again.by_id


async def test_the_code_step_without_its_token_sends_back_to_login(browser: Client) -> None:
    response = await browser.post("/web/login/mfa", form={"code": "123456"}, headers=SAME_ORIGIN)

    assert response.status_code == 400
    page = await page_of(response)
    assert page.text["title"] == "Log in again"
    assert page.by_id["next"]["href"] == "/login"


async def test_totp_is_turned_off_on_the_page_with_a_current_code(browser: Client) -> None:
    await sign_up(browser)
    secret, _ = await turn_on_totp(browser)

    wrong = await post(browser, "/web/account/totp/disable", totp_off_code=wrong_code(secret))
    off = await post(browser, "/web/account/totp/disable", totp_off_code=code_at(secret, 1))

    assert wrong.status_code == 401
    wrong_page = await page_of(wrong)
    assert wrong_page.text["totp_off_code-error"]
    assert "autofocus" in wrong_page.by_id["totp_off_code"]
    assert wrong_page.text["totp-status"].startswith("On")
    assert off.status_code == 200
    page = await page_of(off)
    assert page.text["account-notice-text"].startswith("Your authenticator app is turned off")
    assert page.text["totp-status"].startswith("Off")
    assert "totp-setup-form" in page.by_id


async def test_a_throttled_code_step_says_how_long_to_wait(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory(
        cookie_secure=False, public_url="http://localhost", throttle_account_limits="2/minute"
    )
    async with running_app(settings) as application:
        browser = application.test_client()
        await sign_up(browser)
        secret, _ = await turn_on_totp(browser)
        await log_out(browser)
        step = await page_of(
            await browser.post(
                "/web/login", form={"username": "ada", "password": PASSWORD}, headers=SAME_ORIGIN
            )
        )
        mfa_token = next(field["value"] for field in step.inputs if field["name"] == "mfa_token")
        assert mfa_token
        form = {"mfa_token": mfa_token, "methods": "totp recovery_code", "code": wrong_code(secret)}
        failures = [
            await browser.post("/web/login/mfa", form=form, headers=SAME_ORIGIN) for _ in range(2)
        ]

        throttled = await browser.post(
            "/web/login/mfa", form={**form, "code": code_at(secret, 1)}, headers=SAME_ORIGIN
        )

    assert [failure.status_code for failure in failures] == [401, 401]
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert "Set-Cookie" not in throttled.headers
    page = await page_of(throttled)
    assert page.text["form-message"].startswith("Too many failed attempts; try again in ")
    assert page.by_id["form-message"]["role"] == "alert"
    assert mfa_token in [field["value"] for field in page.inputs]


async def test_the_script_pages_have_no_inline_script_style_or_handler(
    browser: Client, app: Quart
) -> None:
    await sign_up(browser)
    await add_passkey_row(app, "Laptop")
    await turn_on_totp(browser)
    setup_again = await browser.get("/account")
    await log_out(browser)
    step = await browser.post(
        "/web/login", form={"username": "ada", "password": PASSWORD}, headers=SAME_ORIGIN
    )
    passkey_page = await browser.get("/login/passkey")

    for response in (setup_again, step, passkey_page):
        assert response.status_code == 200
        assert response.headers["Content-Security-Policy"] == SCRIPT_PAGE_CSP
        html = await response.get_data(as_text=True)
        assert re.findall(r"<script[^>]*>", html) == [
            f'<script id="passkeys-script" src="/static/passkeys.js?v='
            f'{pages.SCRIPT_VERSIONS["passkeys.js"]}" defer>'
        ]
        assert not re.search(r"\sstyle\s*=", html, re.IGNORECASE)
        assert not re.search(r"<style", html, re.IGNORECASE)
        assert not re.search(r"\son\w+\s*=", html, re.IGNORECASE)
        assert "http://" not in html
        assert "https://" not in html
    page = await page_of(step)
    assert {"mfa-form", "mfa-passkey-form"} <= page.by_id.keys()  # a code, or the passkey
