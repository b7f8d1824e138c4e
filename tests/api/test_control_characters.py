"""Control characters in any text field are a 422 on both backends, never a 500 (PostgreSQL
refuses NUL) and never a line in a log; passwords only compared with a hash are exempt."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from quart import Quart

from service.web.state import get_state
from tests.support import PASSWORD, Client, SignedUp

CONTROLS = ["\u0000", "\n", "\u001b", "\u007f", "\u0085", "\ud800"]
CONTROL_IDS = ["NUL", "LF", "ESC", "DEL", "NEL", "lone surrogate"]


def with_control(char: str) -> str:
    return f"a{char}@example.com"


async def answer(client: Client, path: str, body: dict[str, str], form: bool) -> Any:
    if form:
        return await client.post(
            path,
            data=urlencode(body, encoding="utf-8", errors="surrogatepass"),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    return await client.post(path, json=body)


LOGIN_PATHS = [
    ("/login", False),
    ("/login", True),
    ("/token", True),
    ("/token", False),
    ("/session", False),
    ("/web/login", True),
]


@pytest.mark.parametrize(("path", "form"), LOGIN_PATHS)
async def test_a_login_name_with_nul_is_refused_by_every_login(
    client: Client, user: SignedUp, path: str, form: bool
) -> None:
    body = {"username": with_control("\u0000"), "password": PASSWORD}
    if path == "/token" and form:
        body["grant_type"] = "password"

    response = await answer(client, path, body, form)

    if path == "/token":  # RFC 6749 §5.2: the token endpoint's validation errors are 400
        assert response.status_code == 400, await response.get_data(as_text=True)
        assert (await response.get_json())["error"] == "invalid_request"
    else:
        assert response.status_code == 422, await response.get_data(as_text=True)
    if path != "/web/login":
        assert response.content_type == "application/problem+json"
        assert (await response.get_json())["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("char", CONTROLS, ids=CONTROL_IDS)
async def test_a_login_name_with_any_control_character_is_422(
    client: Client, user: SignedUp, char: str
) -> None:
    response = await client.post(
        "/login", json={"username": with_control(char), "password": PASSWORD}
    )

    assert response.status_code == 422
    problem = await response.get_json()
    assert problem["code"] == "VALIDATION_ERROR"
    assert [error["loc"] for error in problem["errors"]] == [["body", "username"]]


@pytest.mark.parametrize(
    ("field", "char"),
    [
        *(("name", char) for char in CONTROLS),
        ("username", "\u0000"),
        ("email", "\u0000"),
        ("password", "\u0000"),
    ],
)
async def test_a_signup_field_with_a_control_character_is_422_and_creates_nobody(
    client: Client, field: str, char: str
) -> None:
    body = {"username": "carol", "email": "carol@example.com", "password": PASSWORD}
    body[field] = {
        "username": f"car{char}ol",
        "email": f"car{char}ol@example.com",
        "password": f"{PASSWORD}{char}x",
        "name": f"Carol{char}Smith",
    }[field]

    response = await client.post("/signup", json=body)
    clean = await client.post(
        "/signup", json={"username": "carol", "email": "carol@example.com", "password": PASSWORD}
    )

    assert response.status_code == 422, await response.get_data(as_text=True)
    problem = await response.get_json()
    assert problem["code"] == "VALIDATION_ERROR"
    assert problem["errors"][0]["loc"] == ["body", field]
    assert clean.status_code == 201  # the refused signup left nothing behind


@pytest.mark.parametrize("char", ["\u0000", "\u001b"], ids=["NUL", "ESC"])
async def test_a_profile_name_with_a_control_character_is_422_and_changes_nothing(
    client: Client, auth_headers: dict[str, str], char: str
) -> None:
    response = await client.patch("/me", json={"name": f"Al{char}ice"}, headers=auth_headers)
    me = await client.get("/me", headers=auth_headers)

    assert response.status_code == 422
    assert (await response.get_json())["errors"][0]["loc"] == ["body", "name"]
    assert (await me.get_json())["name"] is None


async def test_a_refresh_token_with_a_control_character_is_422(client: Client) -> None:
    response = await client.post("/refresh", json={"refresh_token": "a.b\u0000.c"})

    assert response.status_code == 422
    assert (await response.get_json())["code"] == "VALIDATION_ERROR"


async def test_a_new_password_with_a_control_character_is_422(
    client: Client, user: SignedUp, auth_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/me/password",
        json={"current_password": user.password, "new_password": f"{PASSWORD}\u0000"},
        headers=auth_headers,
    )

    assert response.status_code == 422
    assert (await response.get_json())["errors"][0]["loc"] == ["body", "new_password"]


async def test_a_login_password_with_a_control_character_is_only_a_wrong_password(
    client: Client, user: SignedUp
) -> None:
    # Never stored, only compared with a hash: a password chosen before the rule still works.
    response = await client.post(
        "/login", json={"username": user.username, "password": f"{PASSWORD}\u0000"}
    )

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "INVALID_CREDENTIALS"


async def test_a_password_with_a_control_character_set_before_the_rule_still_logs_in(
    app: Quart, client: Client
) -> None:
    state = get_state(app)
    old_password = f"{PASSWORD}\t"
    await state.accounts.register(
        username="dave",
        email="dave@example.com",
        password=old_password,
    )

    response = await client.post("/login", json={"username": "dave", "password": old_password})

    assert response.status_code == 200
