"""POST /signup: the contract's user object, 201 + Location, 409 on duplicates, 422 on bad input."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from tests.support import PASSWORD, Client, SignedUp

PROBLEM = "application/problem+json"


async def signup(client: Client, **fields: Any) -> Any:
    body = {"username": "bob", "email": "bob@example.com", "password": PASSWORD, **fields}
    return await client.post("/signup", json=body)


async def test_signup_returns_the_user_object_with_location(client: Client) -> None:
    response = await signup(client, name="Bob Builder", email="Bob@Example.COM")

    assert response.status_code == 201
    body = await response.get_json()
    assert set(body) == {
        "id",
        "username",
        "email",
        "name",
        "roles",
        "is_active",
        "email_verified",
        "created_at",
    }
    assert body["email_verified"] is False
    assert uuid.UUID(body["id"]).version == 4
    assert body["username"] == "bob"
    assert body["email"] == "bob@example.com"
    assert body["name"] == "Bob Builder"
    assert body["roles"] == []
    assert body["is_active"] is True
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert response.headers["Location"] == f"/users/{body['id']}"


async def test_signup_accepts_a_form_body(client: Client) -> None:
    response = await client.post(
        "/signup", form={"username": "carol", "email": "carol@example.com", "password": PASSWORD}
    )

    assert response.status_code == 201
    assert (await response.get_json())["username"] == "carol"


async def test_signup_never_returns_the_password_or_its_hash(client: Client) -> None:
    response = await signup(client)

    text = await response.get_data(as_text=True)
    assert PASSWORD not in text
    assert "argon2" not in text
    assert "password" not in text


@pytest.mark.parametrize(
    ("username", "email"),
    [("ALICE", "new@example.com"), ("Alice", "new@example.com"), ("newbie", "ALICE@EXAMPLE.COM")],
)
async def test_signup_duplicate_in_any_letter_case_is_409(
    client: Client, user: SignedUp, username: str, email: str
) -> None:
    response = await signup(client, username=username, email=email)

    assert response.status_code == 409
    assert response.content_type == PROBLEM
    body = await response.get_json()
    assert body["code"] == "USER_EXISTS"
    assert body["status"] == 409
    assert body["type"] == "about:blank"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"username": "ab"}, "username"),
        ({"username": "x" * 33}, "username"),
        ({"username": "bad name"}, "username"),
        ({"username": "émile"}, "username"),
        ({"password": "short"}, "password"),
        ({"password": "p" * 129}, "password"),
        ({"password": 12345678}, "password"),
        ({"username": ["bob"]}, "username"),
        ({"name": "x" * 101}, "name"),
        ({"name": "bell\x07"}, "name"),
    ],
)
async def test_signup_invalid_fields_are_422_with_the_field_named(
    client: Client, fields: dict[str, Any], field: str
) -> None:
    response = await signup(client, **fields)

    assert response.status_code == 422
    assert response.content_type == PROBLEM
    body = await response.get_json()
    assert body["code"] == "VALIDATION_ERROR"
    assert any(error["loc"] == ["body", field] for error in body["errors"])


async def test_signup_missing_fields_are_listed(client: Client) -> None:
    response = await client.post("/signup", json={})

    assert response.status_code == 422
    locations = {tuple(error["loc"]) for error in (await response.get_json())["errors"]}
    assert locations == {("body", "username"), ("body", "email"), ("body", "password")}


async def test_signup_password_length_counts_characters_after_nfkc(client: Client) -> None:
    # Eight emoji are eight characters (32 bytes): long enough.
    assert (await signup(client, password="😀" * 8)).status_code == 201
    # 128 characters is the maximum; 64 emoji are fine.
    assert (
        await signup(client, username="emoji2", email="e2@x.io", password="😀" * 64)
    ).status_code == 201
    # "Ⅻ" is one character that NFKC turns into two ("XII"): 4 of them are 8 characters.
    assert (
        await signup(client, username="emoji3", email="e3@x.io", password="Ⅻ" * 4)
    ).status_code == 201


async def test_signup_does_not_echo_the_password_in_errors(client: Client) -> None:
    secret = "hunter2-secret-value" * 7  # 140 characters: refused, so it has an error entry

    response = await signup(client, email="broken", password=secret)

    assert response.status_code == 422
    assert response.content_type == PROBLEM
    assert await response.get_json() == {
        "type": "about:blank",
        "title": "Request validation failed",
        "status": 422,
        "detail": "The request body or parameters are not valid.",
        "code": "VALIDATION_ERROR",
        "errors": [
            {
                "loc": ["body", "email"],
                "msg": "value is not a valid email address: An email address must have an @-sign.",
            },
            {
                "loc": ["body", "password"],
                "msg": "Value error, Password must be 8 to 128 characters (it has 140).",
            },
        ],
    }
    assert "hunter2-secret-value" not in await response.get_data(as_text=True)
