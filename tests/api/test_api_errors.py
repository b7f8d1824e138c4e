"""Every error is problem+json with a stable code: framework errors, bad bodies, crashes."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from pydantic import BaseModel
from quart import Response, request
from quart_schema import validate_request

from service.web.app import create_app
from service.web.routes.docs import DOCS_CSP
from tests.support import PASSWORD, Client, make_settings

PROBLEM = "application/problem+json"


async def expect_problem(response: Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    assert response.content_type == PROBLEM
    body: dict[str, object] = await response.get_json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    return body


async def test_unknown_path_is_404_problem(client: Client) -> None:
    await expect_problem(await client.get("/no/such/path"), 404, "NOT_FOUND")


async def test_wrong_method_is_405_problem_with_allow(client: Client) -> None:
    response = await client.delete("/signup")

    await expect_problem(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["Allow"]


async def test_body_over_64_kib_is_413(client: Client) -> None:
    response = await client.post(
        "/signup",
        data=b'{"username": "' + b"a" * (64 * 1024) + b'"}',
        headers={"Content-Type": "application/json"},
    )

    await expect_problem(response, 413, "PAYLOAD_TOO_LARGE")


async def test_body_just_under_the_limit_is_read(client: Client) -> None:
    padding = "a" * (60 * 1024)
    response = await client.post(
        "/signup",
        json={"username": "bob", "email": "b@x.io", "password": PASSWORD, "padding": padding},
    )

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b'{"username": "\xff\xfe", "password": "x"}', "application/json"),
        (b"username=\xff\xfe&password=xxxxxxxxx", "application/x-www-form-urlencoded"),
        (b"username=%ff%fe&password=xxxxxxxxx", "application/x-www-form-urlencoded"),
    ],
)
async def test_invalid_utf8_is_422_not_500(client: Client, data: bytes, content_type: str) -> None:
    response = await client.post("/login", data=data, headers={"Content-Type": content_type})

    body = await expect_problem(response, 422, "VALIDATION_ERROR")
    assert body["errors"] == [{"loc": ["body"], "msg": body["detail"]}]


@pytest.mark.parametrize(
    "data", [b"{", b"[1, 2]", b'"text"', b"null", b'{"a": 1,}', b"[" * 5000, b"NaN"]
)
async def test_malformed_json_is_422(client: Client, data: bytes) -> None:
    response = await client.post("/login", data=data, headers={"Content-Type": "application/json"})

    await expect_problem(response, 422, "VALIDATION_ERROR")


async def test_deeply_nested_json_is_422(client: Client) -> None:
    nested = '{"a":' * 50 + "1" + "}" * 50
    response = await client.post(
        "/login", data=nested.encode(), headers={"Content-Type": "application/json"}
    )

    await expect_problem(response, 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x", ""]
)
async def test_wrong_content_type_is_415(client: Client, content_type: str) -> None:
    response = await client.post(
        "/signup", data=b"username=bob", headers={"Content-Type": content_type}
    )

    await expect_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_repeated_form_field_is_422(client: Client) -> None:
    response = await client.post(
        "/login",
        data=b"username=a&username=b&password=xxxxxxxx",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    await expect_problem(response, 422, "VALIDATION_ERROR")


async def test_unexpected_exception_is_500_without_trace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(tmp_path))

    @app.get("/boom")
    async def boom() -> str:
        raise ZeroDivisionError("secret internals")

    async with app.test_app():
        with caplog.at_level(logging.ERROR, logger="service"):
            response = await app.test_client().get("/boom")

    body = await expect_problem(response, 500, "INTERNAL_ERROR")
    text = str(body)
    assert "secret internals" not in text
    assert "Traceback" not in text
    assert "ZeroDivisionError" in caplog.text
    assert "secret internals" in caplog.text


class Echo(BaseModel):
    word: str


async def test_errors_of_other_routes_on_the_app_are_problems_too(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))

    @app.post("/echo")
    @validate_request(Echo)
    async def echo(data: Echo) -> dict[str, str]:
        return {"word": data.word}

    @app.post("/raw")
    async def raw() -> dict[str, object]:
        return {"json": await request.get_json()}

    async with app.test_app():
        client = app.test_client()
        schema_error = await client.post("/echo", json={"word": 5})
        bad_utf8 = await client.post(
            "/raw", data=b'{"a": "\xff"}', headers={"Content-Type": "application/json"}
        )
        bad_json = await client.post(
            "/raw", data=b"{", headers={"Content-Type": "application/json"}
        )

    await expect_problem(schema_error, 422, "VALIDATION_ERROR")
    await expect_problem(bad_utf8, 422, "VALIDATION_ERROR")
    await expect_problem(bad_json, 422, "VALIDATION_ERROR")


async def test_responses_carry_security_headers(client: Client) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "req-123"})

    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Request-ID"] == "req-123"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("supplied", ["", "has space", "x" * 65, "semi;colon", "caf\u00e9"])
async def test_an_unusable_request_id_is_replaced_by_a_new_one(
    client: Client, supplied: str
) -> None:
    response = await client.get("/health", headers={"X-Request-ID": supplied})
    again = await client.get("/health", headers={"X-Request-ID": supplied})

    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    assert response.headers["X-Request-ID"] != again.headers["X-Request-ID"]


async def test_error_answers_carry_the_security_headers_once(client: Client) -> None:
    response = await client.get("/protected", headers={"X-Request-ID": "req-9"})

    assert response.status_code == 401
    assert response.headers["X-Request-ID"] == "req-9"
    assert response.headers.getlist("X-Frame-Options") == ["DENY"]
    assert response.headers.getlist("Content-Security-Policy") == [
        "default-src 'none'; frame-ancestors 'none'"
    ]


async def test_a_response_that_sets_its_own_policy_keeps_it(client: Client) -> None:
    page = await client.get("/docs")

    assert page.status_code == 200
    assert page.headers.getlist("Content-Security-Policy") == [DOCS_CSP]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
