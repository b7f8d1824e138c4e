"""Cross-origin browsers: AUTH_CORS_ORIGINS's origins get preflights answered and every answer
labelled, errors included; any other origin gets no Access-Control-* header at all."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from quart import Quart, Response

from service.core.errors import ServiceUnavailable
from service.testing.plugin import started_app
from service.web.app import AuthExtension, create_app
from service.web.cors import ALLOW_HEADERS, EXPOSE_HEADERS
from tests.support import PASSWORD, Client, bearer, make_settings, running_app, signup_and_login

LISTED = "https://app.example.com"
ALSO_LISTED = "http://localhost:5173"
UNLISTED = "https://evil.example"


def cors_headers(response: Response) -> dict[str, str]:
    return {
        name.lower(): value
        for name, value in response.headers.items()
        if name.lower().startswith("access-control-")
    }


def header_set(value: str | None) -> set[str]:
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


def preflight(origin: str, method: str = "GET", headers: str = "authorization") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def add_failing_routes(app: Quart) -> Quart:
    @app.get("/boom")
    async def boom() -> str:
        raise ZeroDivisionError("an unexpected failure")

    @app.get("/unavailable")
    async def unavailable() -> str:
        raise ServiceUnavailable("Try again shortly.", headers={"Retry-After": "1"})

    return app


@asynccontextmanager
async def serving(tmp_path: Path, origins: str, **overrides: Any) -> AsyncIterator[Quart]:
    """The service listing ``origins``, with a route that fails and one that is unavailable."""
    settings = make_settings(tmp_path, cors_origins=origins, cookie_secure=False, **overrides)
    async with started_app(lambda given: add_failing_routes(create_app(given)), settings) as app:
        yield app


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Quart]:
    origins = f"{LISTED}, {ALSO_LISTED}"
    async with serving(tmp_path, origins, throttle_refresh_limits="1/minute") as application:
        yield application


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


@pytest.mark.parametrize(
    ("path", "method", "requested"),
    [
        ("/protected", "GET", "authorization"),  # guarded: the preflight is not a 401
        ("/me", "PATCH", "authorization, content-type"),
        ("/token", "POST", "content-type"),
        ("/session", "POST", "content-type, x-csrf-token, x-request-id"),
        ("/sessions/5d3c1f7e-4a62-4f4b-9f57-1a2b3c4d5e6f", "DELETE", "authorization"),
    ],
)
async def test_a_preflight_from_a_listed_origin_is_204_with_what_it_may_send(
    client: Client, path: str, method: str, requested: str
) -> None:
    response = await client.options(path, headers=preflight(LISTED, method, requested))

    assert response.status_code == 204
    assert await response.get_data() == b""
    labels = cors_headers(response)
    assert labels["access-control-allow-origin"] == LISTED
    assert labels["access-control-allow-credentials"] == "true"
    assert method.lower() in header_set(labels["access-control-allow-methods"])
    assert header_set(labels["access-control-allow-headers"]) >= {
        "authorization",
        "content-type",
        "x-csrf-token",
        "x-request-id",
    }
    assert int(labels["access-control-max-age"]) > 0
    assert "origin" in header_set(response.headers.get("Vary"))


async def test_no_route_refuses_a_preflight_from_a_listed_origin(app: Quart) -> None:
    # Guarded routes included: the browser sends no credentials with a preflight.
    client = app.test_client()
    asked = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<uuid:\w+>", "5d3c1f7e-4a62-4f4b-9f57-1a2b3c4d5e6f", rule.rule)
        path = re.sub(r"<(\w+:)?\w+>", "x", path)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            response = await client.options(path, headers=preflight(LISTED, method))
            allowed = header_set(response.headers.get("Access-Control-Allow-Methods"))
            asked[method, path] = (response.status_code, method.lower() in allowed)

    assert ("GET", "/protected") in asked
    assert asked == {request: (204, True) for request in asked}


async def test_a_preflight_lists_every_allowed_header_whatever_it_asked(client: Client) -> None:
    asked_nothing = await client.options(
        "/protected",
        headers={"Origin": ALSO_LISTED, "Access-Control-Request-Method": "GET"},
    )

    assert asked_nothing.status_code == 204
    assert cors_headers(asked_nothing)["access-control-allow-origin"] == ALSO_LISTED
    assert header_set(cors_headers(asked_nothing)["access-control-allow-headers"]) == {
        name.lower() for name in ALLOW_HEADERS
    }


@pytest.mark.parametrize("origin", [UNLISTED, "https://app.example.com.evil.example", "null"])
async def test_a_preflight_from_another_origin_gets_no_cors_header(
    client: Client, origin: str
) -> None:
    response = await client.options("/protected", headers=preflight(origin))

    assert cors_headers(response) == {}


async def actual_responses(client: Client, origin: str) -> dict[int, Response]:
    """One answer of each kind the API gives, asked from ``origin``."""
    pair = await signup_and_login(client)
    sent = {"Origin": origin}
    for _ in range(2):
        throttled = await client.post("/refresh", headers={**sent, **bearer("x.y.z")})
    answers = [
        await client.get("/protected", headers={**sent, **bearer(pair["access_token"])}),
        await client.post(
            "/signup",
            json={"username": "bob", "email": "bob@example.com", "password": PASSWORD},
            headers=sent,
        ),
        await client.get("/protected", headers=sent),
        await client.get("/nowhere", headers=sent),
        await client.delete("/login", headers=sent),
        await client.post(
            "/login",
            data=b"{" + b" " * (65 * 1024) + b"}",
            headers={**sent, "Content-Type": "application/json"},
        ),
        await client.post("/login", json={"username": "alice"}, headers=sent),
        throttled,
        await client.get("/boom", headers=sent),
        await client.get("/unavailable", headers=sent),
        # Refused by the envelope, outside Quart: a request head over 16 KiB.
        await client.get("/health", query_string={"q": "a" * 16_400}, headers=sent),
    ]
    return {answer.status_code: answer for answer in answers}


async def test_every_answer_to_a_listed_origin_is_labelled_errors_included(
    client: Client,
) -> None:
    answers = await actual_responses(client, LISTED)

    assert sorted(answers) == [200, 201, 401, 404, 405, 413, 422, 429, 431, 500, 503]
    for status, answer in answers.items():
        labels = cors_headers(answer)
        assert labels.get("access-control-allow-origin") == LISTED, status
        assert labels.get("access-control-allow-credentials") == "true", status
        assert header_set(labels.get("access-control-expose-headers")) >= {
            "www-authenticate",
            "retry-after",
            "x-request-id",
            "location",
            "link",
            "x-next-cursor",
        }, status
        assert "access-control-allow-methods" not in labels, status
        assert "origin" in header_set(answer.headers.get("Vary")), status
    # What the exposed headers are there for.
    assert answers[401].headers["WWW-Authenticate"].startswith("Bearer")
    assert "Retry-After" in answers[429].headers
    assert "Location" in answers[201].headers


async def test_answers_to_another_origin_carry_no_cors_header(client: Client) -> None:
    answers = await actual_responses(client, UNLISTED)

    assert sorted(answers) == [200, 201, 401, 404, 405, 413, 422, 429, 431, 500, 503]
    assert {status: cors_headers(answer) for status, answer in answers.items()} == {
        status: {} for status in answers
    }


async def test_answers_without_origin_vary_on_it_and_carry_no_cors_header(
    client: Client,
) -> None:
    health = await client.get("/health")
    too_large = await client.get("/health", query_string={"q": "a" * 16_400})

    for answer in (health, too_large):
        assert cors_headers(answer) == {}
        assert answer.headers.getlist("Vary") == ["Origin"]


async def test_a_listed_origin_logs_in_to_the_cookie_session_and_uses_it(
    client: Client,
) -> None:
    await client.post(
        "/signup", json={"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    )
    asked = await client.options("/session", headers=preflight(LISTED, "POST", "content-type"))
    login = await client.post(
        "/session", json={"username": "alice", "password": PASSWORD}, headers={"Origin": LISTED}
    )
    csrf = (await login.get_json())["csrf_token"]
    me = await client.get("/me", headers={"Origin": LISTED})
    logout = await client.delete("/session", headers={"Origin": LISTED, "X-CSRF-Token": csrf})
    after = await client.get("/me", headers={"Origin": LISTED})

    assert asked.status_code == 204
    assert cors_headers(asked)["access-control-allow-credentials"] == "true"
    assert login.status_code == 200
    assert {cookie.split("=", 1)[0] for cookie in login.headers.getlist("Set-Cookie")} >= {
        "access_token_cookie",
        "csrf_access_token",
    }
    assert me.status_code == 200
    assert (await me.get_json())["username"] == "alice"
    assert logout.status_code == 204
    assert after.status_code == 401
    for answer in (login, me, logout, after):
        assert cors_headers(answer)["access-control-allow-origin"] == LISTED
        assert cors_headers(answer)["access-control-allow-credentials"] == "true"


async def test_another_origin_cannot_log_in_to_the_cookie_session(client: Client) -> None:
    await client.post(
        "/signup", json={"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    )
    response = await client.post(
        "/session", json={"username": "alice", "password": PASSWORD}, headers={"Origin": UNLISTED}
    )

    assert response.status_code == 403
    assert (await response.get_json())["code"] == "CSRF_FAILED"
    assert response.headers.getlist("Set-Cookie") == []
    assert cors_headers(response) == {}


async def test_any_origin_is_allowed_without_credentials(tmp_path: Path) -> None:
    async with serving(tmp_path, "*") as app:
        client = app.test_client()
        pair = await signup_and_login(client)
        asked = await client.options("/protected", headers=preflight(UNLISTED))
        served = await client.get(
            "/protected", headers={"Origin": UNLISTED, **bearer(pair["access_token"])}
        )
        refused = await client.get("/protected", headers={"Origin": LISTED})
        too_large = await client.get(
            "/health", query_string={"q": "a" * 16_400}, headers={"Origin": LISTED}
        )
        # "*" is no listed origin for the cookie session: cross-site logins stay refused.
        cookie_login = await client.post(
            "/session",
            json={"username": "alice", "password": PASSWORD},
            headers={"Origin": UNLISTED},
        )

    assert asked.status_code == 204
    assert cors_headers(asked)["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in cors_headers(asked)
    assert header_set(cors_headers(asked)["access-control-allow-headers"]) == {
        name.lower() for name in ALLOW_HEADERS
    }
    assert (served.status_code, refused.status_code, too_large.status_code) == (200, 401, 431)
    for answer in (served, refused, too_large):
        assert cors_headers(answer) == {
            "access-control-allow-origin": "*",
            "access-control-expose-headers": ", ".join(EXPOSE_HEADERS),
        }
    assert cookie_login.status_code == 403


async def test_without_the_setting_nothing_is_installed_nor_sent(tmp_path: Path) -> None:
    unset = create_app(make_settings(tmp_path / "unset"))
    listed = create_app(make_settings(tmp_path / "listed", cors_origins=LISTED))
    assert len(listed.after_request_funcs[None]) == len(unset.after_request_funcs[None]) + 1
    assert getattr(unset.asgi_app, "early_answer_headers", "missing") is None

    async with running_app(make_settings(tmp_path / "running")) as app:
        client = app.test_client()
        asked = await client.options("/protected", headers=preflight(LISTED))
        served = await client.get("/health", headers={"Origin": LISTED})
        too_large = await client.get(
            "/health", query_string={"q": "a" * 16_400}, headers={"Origin": LISTED}
        )

    assert asked.status_code == 204  # Quart's automatic OPTIONS, as without CORS
    for answer in (asked, served, too_large):
        assert cors_headers(answer) == {}
        assert "Vary" not in answer.headers


async def test_an_app_mounting_the_routes_answers_preflights_too(tmp_path: Path) -> None:
    host = Quart("host")
    settings = make_settings(tmp_path, cors_origins=LISTED)
    AuthExtension(host, settings=settings, mount_routes=True)

    async with host.test_app():
        client = host.test_client()
        asked = await client.options("/protected", headers=preflight(LISTED))
        refused = await client.get("/protected", headers={"Origin": LISTED})

    assert asked.status_code == 204  # a plain Quart app's automatic OPTIONS is a 200
    assert cors_headers(asked)["access-control-allow-origin"] == LISTED
    assert refused.status_code == 401
    assert cors_headers(refused)["access-control-allow-origin"] == LISTED
