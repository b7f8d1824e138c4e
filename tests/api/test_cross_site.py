"""One cross-site check on every endpoint that sets or uses the session cookies: a page on
another site cannot log the browser in (login CSRF), refresh, or log it out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.web.origin import OriginPolicy
from tests.support import PASSWORD, Client, SettingsFactory, running_app

LISTED = "https://app.example.com"
FOREIGN: list[dict[str, str]] = [
    {"Origin": "http://evil.example"},
    {"Origin": "http://localhost:8001"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "null"},
]
OWN: list[dict[str, str]] = [
    {},  # not a browser
    {"Origin": "http://localhost"},
    {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"},
    {"Sec-Fetch-Site": "none"},
    {"Origin": LISTED, "Sec-Fetch-Site": "cross-site"},
]


@pytest.fixture
async def browser(settings_factory: SettingsFactory) -> AsyncIterator[Client]:
    settings = settings_factory(cookie_secure=False, allowed_origins=LISTED)
    async with running_app(settings) as app:
        client = app.test_client()
        for name in ("victim", "mallory"):
            signup = await client.post(
                "/signup",
                json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
            )
            assert signup.status_code == 201
        yield client


async def log_in(browser: Client, username: str) -> str:
    response = await browser.post("/session", form={"username": username, "password": PASSWORD})
    assert response.status_code == 200
    csrf: str = (await response.get_json())["csrf_token"]
    return csrf


async def signed_in_as(browser: Client) -> Any:
    return (await (await browser.get("/me")).get_json())["username"]


@pytest.mark.parametrize("headers", FOREIGN)
async def test_a_cookie_login_sent_by_another_site_is_refused(
    browser: Client, headers: dict[str, str]
) -> None:
    await log_in(browser, "victim")

    response = await browser.post(
        "/session", form={"username": "mallory", "password": PASSWORD}, headers=headers
    )

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
    assert (await response.get_json())["code"] == "CSRF_FAILED"
    assert response.headers.getlist("Set-Cookie") == []
    assert await signed_in_as(browser) == "victim"


@pytest.mark.parametrize("headers", OWN)
async def test_a_cookie_login_from_this_site_or_a_listed_origin_is_served(
    browser: Client, headers: dict[str, str]
) -> None:
    response = await browser.post(
        "/session", json={"username": "victim", "password": PASSWORD}, headers=headers
    )

    assert response.status_code == 200
    assert {c.split("=", 1)[0] for c in response.headers.getlist("Set-Cookie")} == {
        "access_token_cookie",
        "refresh_token_cookie",
        "csrf_access_token",
    }


@pytest.mark.parametrize("headers", FOREIGN)
async def test_a_cookie_refresh_sent_by_another_site_is_refused_and_spends_nothing(
    browser: Client, headers: dict[str, str]
) -> None:
    csrf = await log_in(browser, "victim")

    refused = await browser.post("/refresh", headers={"X-CSRF-Token": csrf, **headers})
    served = await browser.post("/refresh", headers={"X-CSRF-Token": csrf})

    assert refused.status_code == 403
    assert (await refused.get_json())["code"] == "CSRF_FAILED"
    assert refused.headers.getlist("Set-Cookie") == []
    assert served.status_code == 200  # the refresh token was not spent by the refused one


@pytest.mark.parametrize("headers", FOREIGN)
async def test_a_cookie_logout_sent_by_another_site_is_refused(
    browser: Client, headers: dict[str, str]
) -> None:
    csrf = await log_in(browser, "victim")

    response = await browser.delete("/session", headers={"X-CSRF-Token": csrf, **headers})

    assert response.status_code == 403
    assert (await response.get_json())["code"] == "CSRF_FAILED"
    assert await signed_in_as(browser) == "victim"


@pytest.mark.parametrize(
    ("origin", "fetch_site", "allowed"),
    [
        (None, None, True),
        (None, "none", True),
        (None, "same-origin", True),
        (None, "same-site", False),
        (None, "cross-site", False),
        ("https://auth.example.com", None, True),
        ("https://AUTH.example.com/", "same-origin", True),
        ("https://auth.example.com:8443", None, False),
        ("https://evil.example", None, False),
        ("https://auth.example.com", "cross-site", False),
        ("null", None, False),
        ("null", "same-origin", True),
        ("http://[", None, False),
        ("", None, False),
        (LISTED, "cross-site", True),
        (f"{LISTED}/", "same-site", True),
    ],
)
def test_the_origin_policy(origin: str | None, fetch_site: str | None, allowed: bool) -> None:
    policy = OriginPolicy.from_setting(f" {LISTED} ,, ")

    assert policy.allows(origin=origin, fetch_site=fetch_site, host="auth.example.com") is allowed
