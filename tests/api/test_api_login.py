"""POST /login and POST /token: the token pair, and one answer for every wrong credential."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from quart import Quart

from service.web.state import get_state
from tests.support import PASSWORD, Client, SignedUp

PAIR_FIELDS = {"access_token", "refresh_token", "token_type", "expires_in", "refresh_expires_in"}


async def test_login_returns_a_fresh_token_pair(app: Quart, client: Client, user: SignedUp) -> None:
    response = await client.post("/login", json={"username": "alice", "password": PASSWORD})

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.get_json()
    assert set(body) == PAIR_FIELDS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["refresh_expires_in"] == 1_209_600
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "HS256"
    assert header["typ"] == "JWT"
    assert header["kid"] == get_state(app).accounts.tokens.key.kid
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user.id
    assert claims["type"] == "access"
    assert claims["fresh"] is True
    assert claims["roles"] == []
    assert claims["iss"] == "auth-service"
    assert claims["aud"] == "auth-service"
    assert {"iat", "nbf", "exp", "jti"} <= set(claims)
    refresh = jwt.decode(body["refresh_token"], options={"verify_signature": False})
    assert refresh["type"] == "refresh"
    assert refresh["sub"] == user.id
    assert refresh["jti"] != claims["jti"]


@pytest.mark.parametrize("login", ["alice", "ALICE", "alice@example.com", "Alice@Example.Com"])
async def test_login_by_username_or_email_in_any_case(
    client: Client, user: SignedUp, login: str
) -> None:
    response = await client.post("/login", form={"username": login, "password": PASSWORD})

    assert response.status_code == 200


async def test_wrong_password_unknown_user_and_disabled_account_look_the_same(
    app: Quart, client: Client, user: SignedUp
) -> None:

    wrong = await client.post("/login", json={"username": "alice", "password": "not it at all"})
    unknown = await client.post("/login", json={"username": "nobody", "password": PASSWORD})
    await get_state(app).accounts.set_active("alice", active=False)
    disabled = await client.post("/login", json={"username": "alice", "password": PASSWORD})

    bodies = [await response.get_json() for response in (wrong, unknown, disabled)]
    assert [response.status_code for response in (wrong, unknown, disabled)] == [401, 401, 401]
    assert bodies[0] == bodies[1] == bodies[2]
    assert bodies[0]["code"] == "INVALID_CREDENTIALS"
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="auth-service"'


async def test_login_password_is_not_truncated(client: Client) -> None:
    long_password = "a" * 72 + "tail-one"
    await client.post(
        "/signup", json={"username": "long", "email": "l@x.io", "password": long_password}
    )

    other_tail = await client.post(
        "/login", json={"username": "long", "password": "a" * 72 + "tail-two"}
    )
    right = await client.post("/login", json={"username": "long", "password": long_password})

    assert other_tail.status_code == 401
    assert right.status_code == 200


async def test_login_missing_password_is_422(client: Client) -> None:
    response = await client.post("/login", json={"username": "alice"})

    assert response.status_code == 422
    assert (await response.get_json())["errors"] == [
        {"loc": ["body", "password"], "msg": "Field required"}
    ]


async def test_token_password_grant_with_a_form(client: Client, user: SignedUp) -> None:
    response = await client.post(
        "/token",
        form={
            "grant_type": "password",
            "username": "alice",
            "password": PASSWORD,
            "client_id": "swagger",
            "scope": "",
        },
    )

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.get_json()
    assert set(body) == PAIR_FIELDS | {"token", "user_id"}
    assert body["token"] == body["access_token"]
    assert body["user_id"] == user.id


async def test_token_accepts_a_json_body_without_grant_type(client: Client, user: SignedUp) -> None:
    response = await client.post("/token", json={"username": "alice", "password": PASSWORD})

    assert response.status_code == 200
    assert (await response.get_json())["user_id"] == user.id


async def test_token_wrong_password_is_invalid_grant(client: Client, user: SignedUp) -> None:
    response = await client.post(
        "/token", form={"grant_type": "password", "username": "alice", "password": "nope-nope"}
    )

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    body = await response.get_json()
    assert body["error"] == "invalid_grant"
    assert body["code"] == "INVALID_CREDENTIALS"


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "password", "username": "alice"},
        {"grant_type": "password"},
        {"grant_type": "password", "username": "", "password": PASSWORD},
    ],
)
async def test_token_missing_fields_are_invalid_request(
    client: Client, user: SignedUp, form: dict[str, str]
) -> None:
    response = await client.post("/token", form=form)

    assert response.status_code == 400
    body = await response.get_json()
    assert body["error"] == "invalid_request"
    assert body["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    "send",
    [
        {"form": {"grant_type": "urn:ietf:params:oauth:grant-type:device_code"}},
        {"form": {"grant_type": "Password", "username": "alice", "password": PASSWORD}},
        {"json": {"grant_type": "authorization_code", "code": "abc"}},
    ],
    ids=["form", "form-wrong-case", "json"],
)
async def test_token_unknown_grant_type_is_unsupported_grant_type(
    client: Client, user: SignedUp, send: dict[str, dict[str, str]]
) -> None:
    response = await client.post("/token", **send)

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.get_json() == {
        "type": "about:blank",
        "title": "Token request failed",
        "status": 400,
        "detail": "The grant_type must be one of: password, refresh_token, client_credentials.",
        "code": "UNSUPPORTED_GRANT_TYPE",
        "error": "unsupported_grant_type",
        "error_description": (
            "The grant_type must be one of: password, refresh_token, client_credentials."
        ),
    }


@pytest.mark.parametrize("grant_type", [None, ""], ids=["omitted", "empty"])
async def test_token_form_without_grant_type_is_invalid_request(
    client: Client, user: SignedUp, grant_type: str | None
) -> None:
    form = {"username": "alice", "password": PASSWORD}
    if grant_type is not None:
        form["grant_type"] = grant_type

    response = await client.post("/token", form=form)

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert await response.get_json() == {
        "type": "about:blank",
        "title": "Token request failed",
        "status": 400,
        "detail": "The request body or parameters are not valid.",
        "code": "VALIDATION_ERROR",
        "error": "invalid_request",
        "error_description": "The request body or parameters are not valid.",
        "errors": [{"loc": ["body", "grant_type"], "msg": "Field required"}],
    }


async def test_token_refresh_grant_rotates(client: Client, tokens: dict[str, Any]) -> None:
    response = await client.post(
        "/token", form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )

    assert response.status_code == 200
    body = await response.get_json()
    assert body["refresh_token"] != tokens["refresh_token"]
    assert body["token"] == body["access_token"]


async def test_token_refresh_grant_with_garbage_is_invalid_grant(client: Client) -> None:
    response = await client.post(
        "/token", form={"grant_type": "refresh_token", "refresh_token": "x.y.z"}
    )

    assert response.status_code == 400
    body = await response.get_json()
    assert body["error"] == "invalid_grant"
    assert body["code"] == "TOKEN_INVALID"


async def test_token_refresh_grant_of_a_disabled_account_is_invalid_grant(
    app: Quart, client: Client, tokens: dict[str, Any]
) -> None:

    await get_state(app).accounts.set_active("alice", active=False)

    response = await client.post(
        "/token", form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert "WWW-Authenticate" not in response.headers
    assert await response.get_json() == {
        "type": "about:blank",
        "title": "Token request failed",
        "status": 400,
        "detail": "The account is disabled.",
        "code": "ACCOUNT_DISABLED",
        "error": "invalid_grant",
        "error_description": "The account is disabled.",
    }


async def test_token_refresh_grant_without_the_token_is_invalid_request(client: Client) -> None:
    response = await client.post("/token", form={"grant_type": "refresh_token"})

    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_request"


async def test_token_wrong_content_type_is_invalid_request(client: Client) -> None:
    response = await client.post(
        "/token", data="username=alice", headers={"Content-Type": "text/plain"}
    )

    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_request"
