"""The browser session: cookies with the contract's attributes, CSRF on unsafe methods."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support import PASSWORD, Client, SettingsFactory, running_app


@pytest.fixture
async def browser(settings_factory: SettingsFactory) -> AsyncIterator[Client]:
    # The test client speaks plain http, where a browser would not send Secure cookies.
    async with running_app(settings_factory(cookie_secure=False)) as app:
        client = app.test_client()
        await client.post(
            "/signup", json={"username": "alice", "email": "a@x.io", "password": PASSWORD}
        )
        yield client


def set_cookies(response: Any) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in response.headers.getlist("Set-Cookie")}


def attributes(cookie: str) -> list[str]:
    """The attributes of a Set-Cookie header, after its name=value."""
    return [attribute.strip() for attribute in cookie.split(";")[1:]]


async def log_in(browser: Client) -> tuple[Any, str]:
    response = await browser.post("/session", form={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    body = await response.get_json()
    return response, body["csrf_token"]


async def test_session_login_sets_the_three_cookies(browser: Client) -> None:
    response, csrf = await log_in(browser)

    body = await response.get_json()
    assert body["username"] == "alice"
    assert body["csrf_token"] == csrf
    assert "access_token" not in body
    cookies = set_cookies(response)
    access, refresh, csrf_cookie = (
        cookies["access_token_cookie"],
        cookies["refresh_token_cookie"],
        cookies["csrf_access_token"],
    )
    assert "HttpOnly" in access
    assert "SameSite=Lax" in access
    assert "Path=/;" in access or access.endswith("Path=/")
    assert "HttpOnly" in refresh
    assert "Path=/refresh" in refresh
    assert "HttpOnly" not in csrf_cookie
    assert f"csrf_access_token={csrf}" in csrf_cookie
    assert "Secure" not in access


async def test_cookies_are_secure_outside_development(settings_factory: SettingsFactory) -> None:
    async with running_app(settings_factory()) as app:  # AUTH_ENV=testing
        client = app.test_client()
        signup = await client.post(
            "/signup", json={"username": "bob", "email": "b@x.io", "password": PASSWORD}
        )
        response = await client.post("/session", json={"username": "bob", "password": PASSWORD})

    assert signup.status_code == 201
    assert response.status_code == 200
    cookies = set_cookies(response)
    assert set(cookies) == {"access_token_cookie", "refresh_token_cookie", "csrf_access_token"}
    for cookie in cookies.values():
        assert "Secure" in attributes(cookie), cookie


async def test_the_cookie_authenticates_safe_requests(browser: Client) -> None:
    await log_in(browser)

    response = await browser.get("/me")

    assert response.status_code == 200
    assert (await response.get_json())["username"] == "alice"


async def test_an_unsafe_request_with_the_cookie_needs_the_csrf_header(browser: Client) -> None:
    _, csrf = await log_in(browser)

    missing = await browser.patch("/me", json={"name": "Eve"})
    wrong = await browser.patch("/me", json={"name": "Eve"}, headers={"X-CSRF-Token": "guess"})
    right = await browser.patch("/me", json={"name": "Alice"}, headers={"X-CSRF-Token": csrf})

    assert missing.status_code == 403
    assert (await missing.get_json())["code"] == "CSRF_FAILED"
    assert wrong.status_code == 403
    assert right.status_code == 200
    assert (await right.get_json())["name"] == "Alice"


async def test_a_csrf_header_outside_ascii_is_refused_not_a_500(browser: Client) -> None:
    await log_in(browser)
    # A header value is bytes; Latin-1 decoding gives a str that str comparison cannot take.
    header = {"X-CSRF-Token": "caf\u00e9"}

    patched = await browser.patch("/me", json={"name": "Eve"}, headers=header)
    refreshed = await browser.post("/refresh", headers=header)

    assert patched.status_code == 403
    assert (await patched.get_json())["code"] == "CSRF_FAILED"
    assert refreshed.status_code == 403
    assert (await refreshed.get_json())["code"] == "CSRF_FAILED"


async def test_a_foreign_origin_is_refused_even_with_the_token(browser: Client) -> None:
    _, csrf = await log_in(browser)

    response = await browser.patch(
        "/me",
        json={"name": "Eve"},
        headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
    )

    assert response.status_code == 403
    assert (await response.get_json())["code"] == "CSRF_FAILED"


async def test_refresh_with_the_cookie_needs_csrf_and_resets_the_cookies(browser: Client) -> None:
    _, csrf = await log_in(browser)

    refused = await browser.post("/refresh")
    response = await browser.post("/refresh", headers={"X-CSRF-Token": csrf})

    assert refused.status_code == 403
    assert response.status_code == 200
    assert set(set_cookies(response)) == {
        "access_token_cookie",
        "refresh_token_cookie",
        "csrf_access_token",
    }
    assert (await browser.get("/me")).status_code == 200


async def test_delete_session_revokes_and_clears(browser: Client) -> None:
    login, csrf = await log_in(browser)
    access_cookie = set_cookies(login)["access_token_cookie"].split(";")[0].split("=", 1)[1]

    response = await browser.delete("/session", headers={"X-CSRF-Token": csrf})

    assert response.status_code == 204
    cleared = set_cookies(response)
    assert all(
        "Max-Age=0" in cleared[name] or "expires=Thu, 01 Jan 1970" in cleared[name]
        for name in ("access_token_cookie", "refresh_token_cookie", "csrf_access_token")
    )
    stolen = await browser.get("/me", headers={"Authorization": f"Bearer {access_cookie}"})
    assert stolen.status_code == 401
    assert (await stolen.get_json())["code"] == "TOKEN_REVOKED"


async def test_the_bearer_header_needs_no_csrf(browser: Client) -> None:
    response = await browser.post("/login", json={"username": "alice", "password": PASSWORD})
    token = (await response.get_json())["access_token"]

    patched = await browser.patch(
        "/me", json={"name": "Al"}, headers={"Authorization": f"Bearer {token}"}
    )

    assert patched.status_code == 200


@pytest.mark.parametrize("origin", ["http://[", "", "null", "https://localhost.evil.example"])
async def test_a_malformed_or_empty_origin_is_refused_not_a_500(
    browser: Client, origin: str
) -> None:
    _, csrf = await log_in(browser)

    response = await browser.patch(
        "/me", json={"name": "Eve"}, headers={"X-CSRF-Token": csrf, "Origin": origin}
    )

    assert response.status_code == 403
    assert (await response.get_json())["code"] == "CSRF_FAILED"
