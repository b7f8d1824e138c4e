"""GET /protected and GET /me behind token_required: every way a token is refused is a 401."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from quart import Quart

from service.core.tokens import encode_token
from service.web.state import get_state
from tests.support import PASSWORD, Client, SignedUp

CHALLENGE = 'Bearer realm="auth-service"'


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_protected_returns_id_and_username(
    client: Client, user: SignedUp, auth_headers: dict[str, str]
) -> None:
    response = await client.get("/protected", headers=auth_headers)

    assert response.status_code == 200
    assert await response.get_json() == {"id": user.id, "username": "alice"}


async def test_me_returns_the_user_object(
    client: Client, user: SignedUp, auth_headers: dict[str, str]
) -> None:
    response = await client.get("/me", headers=auth_headers)

    assert response.status_code == 200
    body = await response.get_json()
    assert body["id"] == user.id
    assert body["email"] == "alice@example.com"
    assert "password_hash" not in body
    assert "pk" not in body


async def test_users_by_id_is_yourself_only(
    client: Client, user: SignedUp, auth_headers: dict[str, str]
) -> None:
    signup = await client.post(
        "/signup", json={"username": "bob", "email": "bob@example.com", "password": PASSWORD}
    )
    assert signup.status_code == 201
    bob_id = (await signup.get_json())["id"]

    own = await client.get(f"/users/{user.id}", headers=auth_headers)
    other = await client.get(f"/users/{bob_id}", headers=auth_headers)
    nobody = await client.get(f"/users/{uuid.uuid4()}", headers=auth_headers)

    assert own.status_code == 200
    assert (await own.get_json())["id"] == user.id
    assert other.status_code == 404
    assert other.content_type == "application/problem+json"
    assert await other.get_json() == {
        "type": "about:blank",
        "title": "Not found",
        "status": 404,
        "detail": "Nothing is here.",
        "code": "NOT_FOUND",
    }
    # Another user's id is answered like an id that belongs to nobody.
    assert nobody.status_code == 404
    assert await nobody.get_json() == await other.get_json()


@pytest.mark.parametrize("path", ["/protected", "/me"])
async def test_no_token_is_401_token_missing_with_a_bare_challenge(
    client: Client, path: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert (await response.get_json())["code"] == "TOKEN_MISSING"


@pytest.mark.parametrize(
    "authorization", ["Basic YWxpY2U6cHc=", "Bearer", "Bearer   ", "Token abc", "bearer"]
)
async def test_other_schemes_count_as_no_token(client: Client, authorization: str) -> None:
    response = await client.get("/protected", headers={"Authorization": authorization})

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "TOKEN_MISSING"


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "a.b.c.d.e",
        "!!!.***.###",
        "x" * 9000,
        b64({"alg": "none", "typ": "JWT"}) + "." + b64({"sub": "x"}) + ".",
    ],
)
async def test_garbage_tokens_are_401_token_invalid(client: Client, token: str) -> None:
    response = await client.get("/protected", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "TOKEN_INVALID"
    assert response.headers["WWW-Authenticate"].startswith(
        'Bearer realm="auth-service", error="invalid_token"'
    )


async def test_expired_token_is_401_token_expired(
    app: Quart, client: Client, user: SignedUp
) -> None:
    settings = get_state(app).accounts.tokens
    token = encode_token(
        settings, subject=user.id, token_type="access", now=time.time() - 3600
    ).token

    response = await client.get("/protected", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "TOKEN_EXPIRED"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_wrongly_signed_token_is_401(client: Client, tokens: dict[str, Any]) -> None:
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    header = jwt.get_unverified_header(tokens["access_token"])
    forged = jwt.encode(claims, "another-secret-of-at-least-32-bytes!!", headers=header)

    response = await client.get("/protected", headers={"Authorization": f"Bearer {forged}"})

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "TOKEN_INVALID"


async def test_refresh_token_is_refused_where_access_is_needed(
    client: Client, tokens: dict[str, Any]
) -> None:
    response = await client.get(
        "/protected", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}
    )

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "WRONG_TOKEN_TYPE"


async def test_disabled_user_is_refused_with_a_valid_token(
    app: Quart, client: Client, auth_headers: dict[str, str]
) -> None:
    await get_state(app).accounts.set_active("alice", active=False)

    response = await client.get("/protected", headers=auth_headers)

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "ACCOUNT_DISABLED"


async def test_token_of_a_user_that_does_not_exist_is_401(app: Quart, client: Client) -> None:
    token = encode_token(
        get_state(app).accounts.tokens,
        subject="0b7a8f5e-6c53-4d8a-b4a8-3cb2a8f0e9d1",
        token_type="access",
    ).token

    response = await client.get("/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "TOKEN_INVALID"


async def test_token_from_another_issuer_is_401(app: Quart, client: Client, user: SignedUp) -> None:
    from dataclasses import replace

    settings = replace(get_state(app).accounts.tokens, issuer="someone-else")
    token = encode_token(settings, subject=user.id, token_type="access").token

    response = await client.get("/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "TOKEN_INVALID"
