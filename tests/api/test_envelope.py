"""The request envelope: a bounded request head, HSTS over HTTPS, bodiless 204 and OPTIONS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from quart import Quart

from service.web.app import HSTS
from tests.servers import clean_env, hypercorn_server
from tests.support import bearer, make_settings, running_app, signup_and_login

PROBLEM = "application/problem+json"
HEAD_TOO_LARGE = {
    "type": "about:blank",
    "title": "Request Header Fields Too Large",
    "status": 431,
    "detail": "The request target and headers together exceed 16384 bytes.",
    "code": "BAD_REQUEST",
}


def service_env() -> dict[str, str]:
    return clean_env(AUTH_ENV="testing", AUTH_JWT_SECRET="f" * 48)


async def raw_get(base: str, *header_lines: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """A GET /health written in one piece on a raw socket: (status line, headers, body)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = b"\r\n".join([b"GET /health HTTP/1.1", b"Host: x", *header_lines, b"Connection: close"])
    writer.write(head + b"\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    response_head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = response_head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    return status, headers, body


def asgi_client(app: Quart) -> httpx.AsyncClient:
    """A client that shows the response exactly as the app sent it (Quart's test client
    rebuilds a Response, which labels an empty body text/html again)."""
    transport = httpx.ASGITransport(app=cast(Any, app))  # hypercorn's ASGI types, not httpx's
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.mark.slow
async def test_a_head_over_16_kib_in_one_read_is_431_problem(tmp_path: Path) -> None:
    # 65,400 bytes arrive in one read: h11 (16 KiB only while a head is incomplete) lets it pass.
    async with hypercorn_server(tmp_path, service_env()) as base:
        status, headers, body = await raw_get(base, b"X-Padding: " + b"a" * 65_400)

    assert status == b"HTTP/1.1 431 "
    assert headers[b"content-type"] == PROBLEM.encode()
    assert json.loads(body) == HEAD_TOO_LARGE
    assert headers[b"x-content-type-options"] == b"nosniff"


@pytest.mark.slow
async def test_a_head_of_15_kib_is_served(tmp_path: Path) -> None:
    headers = {f"X-Padding-{index}": "a" * 1000 for index in range(15)}
    async with (
        hypercorn_server(tmp_path, service_env()) as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        response = await client.get("/health", headers=headers)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_a_long_target_counts_towards_the_head(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path)) as app:
        at_limit = await app.test_client().get("/health", query_string={"q": "a" * 16_000})
        over = await app.test_client().get("/health", query_string={"q": "a" * 16_400})

    assert at_limit.status_code == 200
    assert over.status_code == 431
    assert await over.get_json() == HEAD_TOO_LARGE


async def test_no_hsts_in_development_over_http(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path, env="development")) as app:
        response = await app.test_client().get("/health")

    assert response.status_code == 200
    assert "Strict-Transport-Security" not in response.headers


async def test_hsts_in_development_over_https(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path, env="development")) as app:
        response = await app.test_client().get("/health", scheme="https")

    assert response.headers.getlist("Strict-Transport-Security") == [HSTS[1]]


async def test_hsts_in_production_over_http(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, env="production", jwt_secret="f" * 48, mail_enabled=False)
    async with running_app(settings) as app:
        response = await app.test_client().get("/health")

    assert (
        response.headers.get("Strict-Transport-Security") == "max-age=31536000; includeSubDomains"
    )


async def test_no_hsts_when_cookies_are_not_secure(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path, cookie_secure=False)) as app:
        response = await app.test_client().get("/health")

    assert "Strict-Transport-Security" not in response.headers


async def test_logout_is_204_without_content_type_or_body(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path)) as app, asgi_client(app) as client:
        pair = await signup_and_login(app.test_client())
        response = await client.post("/logout", headers=bearer(pair["access_token"]))

    assert response.status_code == 204
    assert "Content-Type" not in response.headers
    assert "Content-Length" not in response.headers
    assert response.content == b""
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_automatic_options_is_204_with_allow_and_no_content_type(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path)) as app, asgi_client(app) as client:
        response = await client.options("/login")

    assert response.status_code == 204
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}
    assert "Content-Type" not in response.headers
    assert "Content-Length" not in response.headers
    assert response.content == b""
