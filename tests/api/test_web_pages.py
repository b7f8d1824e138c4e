"""The browser pages: forms with labels and accessible errors, the cookie session, CSRF, CSP."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from service.web.routes import pages
from tests.support import PASSWORD, Client, make_settings, running_app

PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SAME_ORIGIN = {"Origin": "http://localhost"}
EVIL_ORIGIN = {"Origin": "https://evil.example"}
ADA = {"name": "Ada", "username": "ada", "email": "ada@example.com", "password": PASSWORD}


class Page(HTMLParser):
    """The parts of a page the tests look at: elements by id, labels, text by id."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.html = html
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.labels: dict[str, str] = {}
        self.text: dict[str, str] = {}
        self.inputs: list[dict[str, str | None]] = []
        self._open: list[tuple[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        element_id = attributes.get("id")
        if element_id:
            self.by_id[element_id] = {"tag": tag, **attributes}
        if tag == "input":
            self.inputs.append(attributes)
            return
        self._open.append((tag, element_id))
        if tag == "label" and attributes.get("for"):
            self.labels[str(attributes["for"])] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for _tag, element_id in self._open:
            if element_id:
                self.text[element_id] = self.text.get(element_id, "") + data

    def visible_inputs(self) -> list[dict[str, str | None]]:
        return [field for field in self.inputs if field.get("type") != "hidden"]


async def page_of(response: Any) -> Page:
    return Page(await response.get_data(as_text=True))


def set_cookies(response: Any) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in response.headers.getlist("Set-Cookie")}


def cookie_value(response: Any, name: str) -> str:
    return set_cookies(response)[name].split(";", 1)[0].split("=", 1)[1]


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Client]:
    # The test client speaks plain http, where a browser would not send Secure cookies.
    async with running_app(make_settings(tmp_path, cookie_secure=False)) as app:
        yield app.test_client()


async def sign_up(browser: Client, **fields: str) -> Any:
    response = await browser.post("/web/signup", form={**ADA, **fields}, headers=SAME_ORIGIN)
    assert response.status_code == 303, await response.get_data(as_text=True)
    return response


async def dashboard_csrf(browser: Client) -> str:
    page = await page_of(await browser.get("/dashboard"))
    token = page.by_id["logout-csrf"]["value"]
    assert token
    return token


async def test_the_login_page_has_labelled_fields_with_autocomplete(browser: Client) -> None:
    response = await browser.get("/login")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = await page_of(response)
    assert page.labels.keys() == {"username", "password"}
    assert page.by_id["username"]["autocomplete"] == "username"
    assert page.by_id["password"]["autocomplete"] == "current-password"
    assert page.by_id["password"]["type"] == "password"
    assert "autofocus" in page.by_id["username"]
    assert page.by_id["login-form"]["action"] == "/web/login"


async def test_the_signup_page_has_labelled_fields_with_autocomplete(browser: Client) -> None:
    response = await browser.get("/signup")

    assert response.status_code == 200
    page = await page_of(response)
    assert page.labels.keys() == {"name", "username", "email", "password"}
    assert {field["id"]: field["autocomplete"] for field in page.visible_inputs()} == {
        "name": "name",
        "username": "username",
        "email": "email",
        "password": "new-password",
    }
    assert page.by_id["password"]["aria-describedby"] == "password-hint"
    assert page.by_id["signup-form"]["action"] == "/web/signup"


@pytest.mark.parametrize("path", ["/", "/dashboard"])
async def test_without_a_session_the_pages_redirect_to_login(browser: Client, path: str) -> None:
    response = await browser.get(path)

    assert response.status_code == 303
    assert response.headers["Location"] == "/login"
    assert response.headers["Cache-Control"] == "no-store"


async def test_signup_logs_in_and_the_dashboard_welcomes_by_name(browser: Client) -> None:
    response = await sign_up(browser)

    assert response.headers["Location"] == "/dashboard"
    cookies = set_cookies(response)
    assert "HttpOnly" in cookies["access_token_cookie"]
    assert "SameSite=Lax" in cookies["access_token_cookie"]
    dashboard = await browser.get("/dashboard")
    assert dashboard.status_code == 200
    page = await page_of(dashboard)
    assert page.text["welcome"] == "Welcome Ada! You are logged in."
    assert page.by_id["logout-csrf"]["value"] == cookie_value(response, "csrf_access_token")
    root = await browser.get("/")
    assert (root.status_code, root.headers["Location"]) == (303, "/dashboard")


async def test_the_dashboard_names_the_username_when_there_is_no_name(browser: Client) -> None:
    await sign_up(browser, name="   ")

    page = await page_of(await browser.get("/dashboard"))

    assert page.text["welcome"] == "Welcome ada! You are logged in."


async def test_markup_in_a_name_is_escaped(browser: Client) -> None:
    await sign_up(browser, name="<b>Ada</b>")

    html = await (await browser.get("/dashboard")).get_data(as_text=True)

    assert "Welcome &lt;b&gt;Ada&lt;/b&gt;! You are logged in." in html
    assert "<b>" not in html


async def test_the_login_form_logs_in_with_a_username_or_an_email(browser: Client) -> None:
    await browser.post("/signup", json={k: v for k, v in ADA.items() if k != "name"})

    by_name = await browser.post(
        "/web/login", form={"username": "ada", "password": PASSWORD}, headers=SAME_ORIGIN
    )
    by_email = await browser.post(
        "/web/login", form={"username": "ADA@example.com", "password": PASSWORD}
    )

    assert (by_name.status_code, by_name.headers["Location"]) == (303, "/dashboard")
    assert by_email.status_code == 303
    page = await page_of(await browser.get("/dashboard"))
    assert page.text["welcome"] == "Welcome ada! You are logged in."


async def test_a_new_login_ends_the_session_it_replaces(browser: Client) -> None:
    first = await sign_up(browser)
    old_access = cookie_value(first, "access_token_cookie")

    await browser.post("/web/login", form={"username": "ada", "password": PASSWORD})

    stale = await browser.get("/me", headers={"Authorization": f"Bearer {old_access}"})
    assert stale.status_code == 401
    assert (await stale.get_json())["code"] == "TOKEN_REVOKED"
    assert (await browser.get("/dashboard")).status_code == 200


async def test_a_wrong_password_is_shown_next_to_the_password_field(browser: Client) -> None:
    await browser.post("/signup", json={k: v for k, v in ADA.items() if k != "name"})

    response = await browser.post(
        "/web/login", form={"username": "ada", "password": "not the password"}
    )

    assert response.status_code == 401
    assert "Set-Cookie" not in response.headers
    page = await page_of(response)
    assert page.text["password-error"] == "The username or password is wrong."
    password = page.by_id["password"]
    assert password["aria-invalid"] == "true"
    assert password["aria-describedby"] == "password-error"
    assert "autofocus" in password
    assert "value" not in password
    assert page.by_id["username"]["value"] == "ada"
    assert "autofocus" not in page.by_id["username"]
    assert "not the password" not in page.html


async def test_an_empty_login_form_marks_both_fields(browser: Client) -> None:
    response = await browser.post("/web/login", form={"username": "", "password": ""})

    assert response.status_code == 422
    page = await page_of(response)
    assert page.text["username-error"] == "Enter your username."
    assert page.text["password-error"] == "Enter your password."
    assert "autofocus" in page.by_id["username"]


async def test_a_taken_username_is_a_409_next_to_the_username(browser: Client) -> None:
    await sign_up(browser)

    response = await browser.post(
        "/web/signup",
        form={**ADA, "email": "other@example.com", "password": "another password"},
    )

    assert response.status_code == 409
    page = await page_of(response)
    assert page.text["username-error"] == "This username is taken."
    assert page.by_id["username"]["aria-invalid"] == "true"
    assert page.by_id["username"]["aria-describedby"] == "username-error username-hint"
    assert "autofocus" in page.by_id["username"]
    assert page.by_id["email"]["value"] == "other@example.com"
    assert "another password" not in page.html


async def test_a_taken_email_is_a_409_next_to_the_email(browser: Client) -> None:
    await sign_up(browser)

    response = await browser.post(
        "/web/signup", form={**ADA, "username": "ada2", "email": "ADA@example.com"}
    )

    assert response.status_code == 409
    page = await page_of(response)
    assert page.text["email-error"] == "This email is already registered."
    assert "autofocus" in page.by_id["email"]


async def test_a_short_password_is_a_422_and_keeps_the_other_fields(browser: Client) -> None:
    response = await browser.post("/web/signup", form={**ADA, "password": "short"})

    assert response.status_code == 422
    assert "Set-Cookie" not in response.headers
    page = await page_of(response)
    assert page.text["password-error"] == "Password must be 8 to 128 characters (it has 5)."
    assert page.by_id["password"]["aria-describedby"] == "password-error password-hint"
    assert "autofocus" in page.by_id["password"]
    assert "value" not in page.by_id["password"]
    assert page.by_id["name"]["value"] == "Ada"
    assert page.by_id["username"]["value"] == "ada"
    assert page.by_id["email"]["value"] == "ada@example.com"
    assert (await browser.get("/dashboard")).status_code == 303


async def test_a_weak_password_is_a_422_next_to_the_password(browser: Client) -> None:
    response = await browser.post(
        "/web/signup", form={**ADA, "username": "adalovelace", "password": "adalovelace"}
    )

    assert response.status_code == 422
    page = await page_of(response)
    assert page.text["password-error"] == "The password must not be your username."
    assert "autofocus" in page.by_id["password"]


async def test_an_invalid_email_and_username_are_shown_on_their_fields(browser: Client) -> None:
    response = await browser.post(
        "/web/signup", form={**ADA, "username": "a b", "email": "not-an-email"}
    )

    assert response.status_code == 422
    page = await page_of(response)
    assert page.text["username-error"] == "This is not a valid username."
    assert page.text["email-error"] == "Enter a valid email address, like name@example.com."
    assert "password-error" not in page.by_id
    assert "autofocus" in page.by_id["username"]
    assert page.by_id["email"]["value"] == "not-an-email"


async def test_a_throttled_login_is_a_message_on_the_page(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, cookie_secure=False, throttle_account_limits="2/minute")
    async with running_app(settings) as app:
        browser = app.test_client()
        await browser.post("/signup", json={k: v for k, v in ADA.items() if k != "name"})
        wrong = {"username": "ada", "password": "guess"}
        failures = [await browser.post("/web/login", form=wrong) for _ in range(2)]

        response = await browser.post("/web/login", form={"username": "ada", "password": PASSWORD})

    assert [failure.status_code for failure in failures] == [401, 401]
    assert response.status_code == 429
    assert "Set-Cookie" not in response.headers
    assert int(response.headers["Retry-After"]) > 0
    assert response.headers["Content-Security-Policy"] == PAGE_CSP
    page = await page_of(response)
    assert page.text["form-message"].startswith("Too many failed attempts; try again in ")
    assert page.by_id["form-message"]["role"] == "alert"
    assert page.by_id["username"]["value"] == "ada"
    assert "value" not in page.by_id["password"]


async def test_a_body_that_is_not_utf8_is_a_message_on_the_page(browser: Client) -> None:
    response = await browser.post(
        "/web/login",
        data=b"username=ada&password=%FF",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 422
    page = await page_of(response)
    assert page.text["form-message"] == "The form is not valid UTF-8."


@pytest.mark.parametrize("path", ["/web/login", "/web/signup"])
async def test_a_form_from_another_origin_is_refused(browser: Client, path: str) -> None:
    await browser.post("/signup", json={k: v for k, v in ADA.items() if k != "name"})
    form = {**ADA, "username": "eve", "email": "eve@example.com"}
    if path == "/web/login":
        form = {"username": "ada", "password": PASSWORD}

    response = await browser.post(path, form=form, headers=EVIL_ORIGIN)

    assert response.status_code == 403
    assert "Set-Cookie" not in response.headers
    assert (await page_of(response)).text["title"] == "Request refused"
    assert (await browser.get("/dashboard")).status_code == 303
    eve = await browser.post("/login", json={"username": "eve", "password": PASSWORD})
    assert eve.status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "null"},
        {"Origin": "http://localhost:8001"},
        {"Origin": "http://["},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"},
    ],
)
async def test_other_signs_of_another_origin_are_refused(
    browser: Client, headers: dict[str, str]
) -> None:
    response = await browser.post("/web/signup", form=ADA, headers=headers)

    assert response.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"},
        # A browser under a no-referrer policy sends Origin: null; Sec-Fetch-Site vouches for it.
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
    ],
)
async def test_a_form_from_this_origin_is_accepted(
    browser: Client, headers: dict[str, str]
) -> None:
    response = await browser.post("/web/signup", form=ADA, headers=headers)

    assert response.status_code == 303


async def test_the_pages_ask_browsers_to_send_their_origin(browser: Client) -> None:
    page = await page_of(await browser.get("/login"))

    assert '<meta name="referrer" content="same-origin">' in page.html


async def test_a_logout_from_another_origin_is_refused(browser: Client) -> None:
    await sign_up(browser)
    csrf = await dashboard_csrf(browser)

    response = await browser.post("/web/logout", form={"csrf_token": csrf}, headers=EVIL_ORIGIN)

    assert response.status_code == 403
    assert "Set-Cookie" not in response.headers
    assert (await browser.get("/dashboard")).status_code == 200


@pytest.mark.parametrize("form", [{}, {"csrf_token": "guess"}, {"csrf_token": ""}])
async def test_a_logout_without_the_token_is_refused(browser: Client, form: dict[str, str]) -> None:
    await sign_up(browser)

    response = await browser.post("/web/logout", form=form, headers=SAME_ORIGIN)

    assert response.status_code == 403
    assert "Set-Cookie" not in response.headers
    assert (await browser.get("/dashboard")).status_code == 200
    assert (await browser.get("/me")).status_code == 200


async def test_logout_revokes_the_session_and_clears_the_cookies(browser: Client) -> None:
    signup = await sign_up(browser)
    old_access = cookie_value(signup, "access_token_cookie")
    csrf = await dashboard_csrf(browser)

    response = await browser.post("/web/logout", form={"csrf_token": csrf}, headers=SAME_ORIGIN)

    assert response.status_code == 303
    assert response.headers["Location"] == "/login"
    cleared = set_cookies(response)
    assert all(
        "Max-Age=0" in cleared[name] or "expires=Thu, 01 Jan 1970" in cleared[name]
        for name in ("access_token_cookie", "refresh_token_cookie", "csrf_access_token")
    )
    after = await browser.get("/dashboard")
    assert (after.status_code, after.headers["Location"]) == (303, "/login")
    replayed = await browser.get(
        "/dashboard", headers={"Cookie": f"access_token_cookie={old_access}"}
    )
    assert (replayed.status_code, replayed.headers["Location"]) == (303, "/login")
    stolen = await browser.get("/me", headers={"Authorization": f"Bearer {old_access}"})
    assert stolen.status_code == 401
    assert (await stolen.get_json())["code"] == "TOKEN_REVOKED"


async def test_logout_without_a_session_just_goes_to_login(browser: Client) -> None:
    response = await browser.post("/web/logout", form={})

    assert response.status_code == 303
    assert response.headers["Location"] == "/login"


async def test_pages_carry_the_csp_no_store_and_no_inline_script_or_style(
    browser: Client,
) -> None:
    responses = [await browser.get("/login"), await browser.get("/signup")]
    responses.append(await browser.post("/web/login", form={"username": "", "password": ""}))
    responses.append(await browser.post("/web/signup", form={}, headers=EVIL_ORIGIN))
    await sign_up(browser)
    responses.append(await browser.get("/dashboard"))

    for response in responses:
        assert response.headers["Content-Security-Policy"] == PAGE_CSP
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"
        html = await response.get_data(as_text=True)
        assert not re.search(r"<script", html, re.IGNORECASE)
        assert not re.search(r"\sstyle\s*=", html, re.IGNORECASE)
        assert not re.search(r"<style", html, re.IGNORECASE)
        assert not re.search(r"\son\w+\s*=", html, re.IGNORECASE)
        assert "https://" not in html
        assert "http://" not in html


async def test_the_stylesheet_is_served_locally(browser: Client) -> None:
    page = await page_of(await browser.get("/login"))
    href = page.by_id["stylesheet"]["href"]
    assert href is not None
    assert href == f"/static/web.css?v={pages.STYLESHEET_VERSION}"

    response = await browser.get(href)

    assert response.status_code == 200
    assert response.mimetype == "text/css"
    assert "max-age=86400" in response.headers["Cache-Control"]
    assert ".field-error" in await response.get_data(as_text=True)
