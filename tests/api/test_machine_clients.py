"""Machine clients over HTTP: the client credentials grant on POST /token, POST /introspect
(RFC 7662) and POST /revoke (RFC 7009), as the contract's "Machine clients" section says."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from quart import Quart

from service.accounts import clients as clients_module
from service.accounts.clients import DUMMY_SECRET_HASH, ClientCredentials, hash_secret
from service.core.errors import TokenRevoked
from service.core.tokens import SigningKey, TokenSettings, encode_token
from service.web.state import get_state
from tests.support import (
    Client,
    SettingsFactory,
    SignedUp,
    basic,
    basic_of,
    bearer,
    client_token,
    running_app,
)

BASIC_CHALLENGE = 'Basic realm="auth-service"'
CLIENT_TOKEN_FIELDS = {"access_token", "token_type", "expires_in", "scope"}


async def create_client(app: Quart, name: str, *scopes: str) -> ClientCredentials:
    return await get_state(app).accounts.clients.create(name, scopes)


@pytest.fixture
async def machine(app: Quart) -> ClientCredentials:
    return await create_client(app, "reporting", "reports:read", "reports:write")


@pytest.fixture
async def inspector(app: Quart) -> ClientCredentials:
    """A second client, the one that asks /introspect."""
    return await create_client(app, "gateway")


async def introspect(
    client: Client, inspector: ClientCredentials, token: str, **form: str
) -> dict[str, Any]:
    response = await client.post(
        "/introspect", form={"token": token, **form}, headers=basic_of(inspector)
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = await response.get_json()
    return body


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


# --- the client credentials grant ---------------------------------------------------------


async def test_client_credentials_with_basic_auth_give_an_access_token_with_every_scope(
    client: Client, machine: ClientCredentials
) -> None:
    response = await client.post(
        "/token", form={"grant_type": "client_credentials"}, headers=basic_of(machine)
    )

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.get_json()
    assert set(body) == CLIENT_TOKEN_FIELDS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "reports:read reports:write"
    claims = claims_of(body["access_token"])
    assert claims["sub"] == machine.client.client_id
    assert claims["client_id"] == machine.client.client_id
    assert claims["scope"] == "reports:read reports:write"
    assert claims["type"] == "access"
    assert claims["iss"] == "auth-service"
    assert claims["aud"] == "auth-service"
    assert claims["exp"] - claims["iat"] == 900
    assert "sid" not in claims


async def test_client_credentials_in_the_form_work_too(
    client: Client, machine: ClientCredentials
) -> None:
    response = await client.post(
        "/token",
        form={
            "grant_type": "client_credentials",
            "client_id": machine.client.client_id,
            "client_secret": machine.client_secret,
            "scope": "reports:read",
        },
    )

    assert response.status_code == 200
    body = await response.get_json()
    assert body["scope"] == "reports:read"
    assert claims_of(body["access_token"])["scope"] == "reports:read"


async def test_basic_credentials_are_form_urlencoded_before_base64(
    client: Client, machine: ClientCredentials
) -> None:
    """RFC 6749 §2.3.1: ``%2D`` in the Basic credentials is the client_id's ``-``."""
    every_character_encoded = "".join(f"%{ord(c):02X}" for c in machine.client.client_id)
    pair = f"{every_character_encoded}:{machine.client_secret}"
    headers = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}

    response = await client.post(
        "/token", form={"grant_type": "client_credentials"}, headers=headers
    )

    assert response.status_code == 200


async def test_a_requested_scope_must_be_a_subset_of_the_clients(
    client: Client, machine: ClientCredentials
) -> None:
    subset = await client_token(client, machine, scope="reports:write")
    beyond = await client.post(
        "/token",
        form={"grant_type": "client_credentials", "scope": "reports:read admin"},
        headers=basic_of(machine),
    )

    assert subset["scope"] == "reports:write"
    assert beyond.status_code == 400
    assert beyond.content_type == "application/problem+json"
    body = await beyond.get_json()
    assert body["error"] == "invalid_scope"
    assert body["code"] == "INVALID_SCOPE"
    assert "admin" in body["error_description"]


async def test_wrong_secret_unknown_client_and_no_credentials_are_the_same_401(
    client: Client, machine: ClientCredentials
) -> None:
    wrong = await client.post(
        "/token",
        form={"grant_type": "client_credentials"},
        headers=basic(machine.client.client_id, "not-the-secret"),
    )
    unknown = await client.post(
        "/token",
        form={"grant_type": "client_credentials"},
        headers=basic("no-such-client", machine.client_secret),
    )
    none = await client.post("/token", form={"grant_type": "client_credentials"})

    for response in (wrong, unknown, none):
        assert response.status_code == 401
        assert response.content_type == "application/problem+json"
        assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE
        assert response.headers["Cache-Control"] == "no-store"
    wrong_body, unknown_body = await wrong.get_json(), await unknown.get_json()
    assert wrong_body == unknown_body
    assert wrong_body["error"] == "invalid_client"
    assert wrong_body["code"] == "INVALID_CLIENT"
    assert wrong_body["status"] == 401
    assert (await none.get_json())["error"] == "invalid_client"


async def test_an_unknown_client_is_compared_with_a_dummy_hash_like_a_wrong_secret(
    client: Client, machine: ClientCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[str, str]] = []
    real = clients_module.secret_matches

    def spy(secret: str, stored_hash: str) -> bool:
        compared.append((secret, stored_hash))
        return real(secret, stored_hash)

    monkeypatch.setattr(clients_module, "secret_matches", spy)
    for client_id, secret in (("no-such-client", "guess-1"), (machine.client.client_id, "guess-2")):
        response = await client.post(
            "/token", form={"grant_type": "client_credentials"}, headers=basic(client_id, secret)
        )
        assert response.status_code == 401

    assert compared == [
        ("guess-1", DUMMY_SECRET_HASH),
        ("guess-2", hash_secret(machine.client_secret)),
    ]


async def test_basic_and_form_credentials_at_once_are_invalid_request(
    client: Client, machine: ClientCredentials
) -> None:
    response = await client.post(
        "/token",
        form={"grant_type": "client_credentials", "client_secret": machine.client_secret},
        headers=basic_of(machine),
    )

    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_request"


@pytest.mark.parametrize(
    "authorization",
    ["Basic !!!not-base64", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic //79"],
)
async def test_unreadable_basic_credentials_are_invalid_client(
    client: Client, authorization: str
) -> None:
    response = await client.post(
        "/token",
        form={"grant_type": "client_credentials"},
        headers={"Authorization": authorization},
    )

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE
    assert (await response.get_json())["error"] == "invalid_client"


async def test_the_client_credentials_grant_gives_no_refresh_token_to_refresh(
    client: Client, machine: ClientCredentials
) -> None:
    token = (await client_token(client, machine))["access_token"]

    response = await client.post(
        "/token", form={"grant_type": "refresh_token", "refresh_token": token}
    )

    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_grant"


async def test_a_client_token_is_not_a_user_to_token_required_routes(
    client: Client, machine: ClientCredentials
) -> None:
    token = (await client_token(client, machine))["access_token"]

    for path in ("/protected", "/me"):
        response = await client.get(path, headers=bearer(token))
        assert response.status_code == 401, path
        assert (await response.get_json())["code"] == "WRONG_TOKEN_TYPE", path
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


# --- throttling ---------------------------------------------------------------------------


@pytest.fixture
async def strict(settings_factory: SettingsFactory) -> AsyncIterator[Quart]:
    async with running_app(settings_factory(throttle_ip_limits="3/minute")) as app:
        yield app


async def test_client_authentication_failures_are_throttled_with_retry_after(
    strict: Quart,
) -> None:
    client = strict.test_client()
    machine = await create_client(strict, "reporting", "reports:read")
    wrong = basic(machine.client.client_id, "not-the-secret")

    statuses = [
        (
            await client.post("/token", form={"grant_type": "client_credentials"}, headers=wrong)
        ).status_code
        for _ in range(3)
    ]
    throttled = await client.post(
        "/token", form={"grant_type": "client_credentials"}, headers=wrong
    )
    unknown = await client.post(
        "/token",
        form={"grant_type": "client_credentials"},
        headers=basic("no-such-client", "not-the-secret"),
    )
    # The right secret still works: a 256-bit secret cannot be guessed, so a flood of wrong
    # ones (from an attacker who knows the public client_id) must not lock the client out.
    right = await client.post(
        "/token", form={"grant_type": "client_credentials"}, headers=basic_of(machine)
    )

    assert statuses == [401, 401, 401]
    assert throttled.status_code == 429
    assert (await throttled.get_json())["code"] == "TOO_MANY_ATTEMPTS"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert unknown.status_code == 429  # the address's window is full too
    assert right.status_code == 200


async def test_many_concurrent_right_credentials_from_one_address_are_never_throttled(
    strict: Quart,
) -> None:
    client = strict.test_client()
    machine = await create_client(strict, "reporting")

    responses = await asyncio.gather(
        *(
            client.post(
                "/token", form={"grant_type": "client_credentials"}, headers=basic_of(machine)
            )
            for _ in range(40)
        )
    )

    assert [response.status_code for response in responses] == [200] * 40


async def test_successful_client_authentications_take_no_place_in_the_windows(
    strict: Quart,
) -> None:
    client = strict.test_client()
    machine = await create_client(strict, "reporting")

    statuses = [
        (
            await client.post(
                "/token", form={"grant_type": "client_credentials"}, headers=basic_of(machine)
            )
        ).status_code
        for _ in range(6)
    ]

    assert statuses == [200] * 6


# --- the client's life: rotation and deletion ---------------------------------------------


async def test_a_rotated_secret_replaces_the_old_one(
    app: Quart, client: Client, machine: ClientCredentials
) -> None:
    rotated = await get_state(app).accounts.clients.rotate_secret("reporting")

    old = await client.post(
        "/token", form={"grant_type": "client_credentials"}, headers=basic_of(machine)
    )
    new = await client.post(
        "/token", form={"grant_type": "client_credentials"}, headers=basic_of(rotated)
    )

    assert rotated.client.client_id == machine.client.client_id
    assert rotated.client_secret != machine.client_secret
    assert old.status_code == 401
    assert new.status_code == 200


async def test_a_deleted_clients_token_is_refused_at_once(
    app: Quart, client: Client, machine: ClientCredentials, inspector: ClientCredentials
) -> None:
    clients = get_state(app).accounts.clients
    token = (await client_token(client, machine))["access_token"]
    claims = get_state(app).accounts.decode(token, expected_type="access")
    assert (await clients.live_client(claims)).client_id == machine.client.client_id
    assert (await introspect(client, inspector, token))["active"] is True

    await clients.delete("reporting")

    with pytest.raises(TokenRevoked):
        await clients.live_client(claims)
    assert await introspect(client, inspector, token) == {"active": False}
    again = await client.post(
        "/token", form={"grant_type": "client_credentials"}, headers=basic_of(machine)
    )
    assert again.status_code == 401


# --- introspection ------------------------------------------------------------------------


async def test_introspection_of_a_client_token(
    client: Client, machine: ClientCredentials, inspector: ClientCredentials
) -> None:
    token = (await client_token(client, machine, scope="reports:read"))["access_token"]
    claims = claims_of(token)

    body = await introspect(client, inspector, token)

    assert body == {
        "active": True,
        "sub": machine.client.client_id,
        "client_id": machine.client.client_id,
        "scope": "reports:read",
        "token_type": "access_token",
        "exp": claims["exp"],
        "iat": claims["iat"],
        "jti": claims["jti"],
        "iss": "auth-service",
        "aud": "auth-service",
    }


async def test_introspection_of_a_users_access_and_refresh_tokens(
    client: Client, user: SignedUp, tokens: dict[str, Any], inspector: ClientCredentials
) -> None:
    access = claims_of(tokens["access_token"])
    refresh = claims_of(tokens["refresh_token"])

    access_body = await introspect(client, inspector, tokens["access_token"])
    refresh_body = await introspect(
        client, inspector, tokens["refresh_token"], token_type_hint="refresh_token"
    )

    assert access_body == {
        "active": True,
        "sub": user.id,
        "username": "alice",
        "sid": access["sid"],
        "roles": [],
        "token_type": "access_token",
        "exp": access["exp"],
        "iat": access["iat"],
        "jti": access["jti"],
        "iss": "auth-service",
        "aud": "auth-service",
    }
    assert refresh_body == {
        "active": True,
        "sub": user.id,
        "username": "alice",
        "sid": refresh["sid"],
        "token_type": "refresh_token",
        "exp": refresh["exp"],
        "iat": refresh["iat"],
        "jti": refresh["jti"],
        "iss": "auth-service",
        "aud": "auth-service",
    }


async def test_a_wrong_hint_still_finds_the_token(
    client: Client, tokens: dict[str, Any], inspector: ClientCredentials
) -> None:
    body = await introspect(
        client, inspector, tokens["access_token"], token_type_hint="refresh_token"
    )

    assert body["active"] is True
    assert body["token_type"] == "access_token"


async def test_a_spent_refresh_token_is_inactive_and_its_successor_active(
    client: Client, tokens: dict[str, Any], inspector: ClientCredentials
) -> None:
    rotated = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert rotated.status_code == 200
    successor = (await rotated.get_json())["refresh_token"]

    assert await introspect(client, inspector, tokens["refresh_token"]) == {"active": False}
    assert (await introspect(client, inspector, successor))["active"] is True


async def test_expired_forged_and_garbage_tokens_are_inactive(
    app: Quart, client: Client, machine: ClientCredentials, inspector: ClientCredentials
) -> None:
    settings = get_state(app).accounts.tokens
    claims = {"client_id": machine.client.client_id, "scope": "reports:read"}
    expired = encode_token(
        settings,
        subject=machine.client.client_id,
        token_type="access",
        now=time.time() - 3600,
        extra_claims=claims,
    ).token
    other_key = TokenSettings(
        key=SigningKey.hmac("HS256", b"another service's key, 32 bytes long"),
        issuer=settings.issuer,
        audience=settings.audience,
        access_ttl=settings.access_ttl,
        refresh_ttl=settings.refresh_ttl,
    )
    forged = encode_token(
        other_key, subject=machine.client.client_id, token_type="access", extra_claims=claims
    ).token

    for token in (expired, forged, "not.a.token", "x"):
        assert await introspect(client, inspector, token) == {"active": False}, token


async def test_a_logged_out_users_tokens_are_inactive(
    client: Client,
    tokens: dict[str, Any],
    auth_headers: dict[str, str],
    inspector: ClientCredentials,
) -> None:
    assert (await client.post("/logout", headers=auth_headers)).status_code == 204

    assert await introspect(client, inspector, tokens["access_token"]) == {"active": False}
    assert await introspect(client, inspector, tokens["refresh_token"]) == {"active": False}


async def test_introspection_needs_client_authentication(
    client: Client, tokens: dict[str, Any], machine: ClientCredentials
) -> None:
    anonymous = await client.post("/introspect", form={"token": tokens["access_token"]})
    no_body = await client.post("/introspect")
    wrong = await client.post(
        "/introspect",
        form={"token": tokens["access_token"]},
        headers=basic(machine.client.client_id, "not-the-secret"),
    )
    user_bearer = await client.post(
        "/introspect",
        form={"token": tokens["access_token"]},
        headers=bearer(tokens["access_token"]),
    )

    for response in (anonymous, no_body, wrong, user_bearer):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE
        assert (await response.get_json())["error"] == "invalid_client"


async def test_introspection_without_a_token_is_invalid_request(
    client: Client, inspector: ClientCredentials
) -> None:
    missing = await client.post("/introspect", form={}, headers=basic_of(inspector))
    json_body = await client.post("/introspect", json={"token": "x"}, headers=basic_of(inspector))

    assert missing.status_code == 400
    assert (await missing.get_json())["error"] == "invalid_request"
    assert json_body.status_code == 400
    assert (await json_body.get_json())["error"] == "invalid_request"


# --- revocation ---------------------------------------------------------------------------


async def test_revoking_a_refresh_token_ends_its_session(
    client: Client, tokens: dict[str, Any], auth_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/revoke", form={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"}
    )

    assert response.status_code == 200
    assert await response.get_json() == {}
    refreshed = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 401
    assert (await refreshed.get_json())["code"] == "TOKEN_REVOKED"
    protected = await client.get("/protected", headers=auth_headers)
    assert protected.status_code == 401
    assert (await protected.get_json())["code"] == "TOKEN_REVOKED"


async def test_revoking_an_access_token_leaves_its_session(
    client: Client, tokens: dict[str, Any], auth_headers: dict[str, str]
) -> None:
    assert (await client.get("/protected", headers=auth_headers)).status_code == 200

    response = await client.post("/revoke", form={"token": tokens["access_token"]})

    assert response.status_code == 200
    protected = await client.get("/protected", headers=auth_headers)
    assert protected.status_code == 401
    assert (await protected.get_json())["code"] == "TOKEN_REVOKED"
    refreshed = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200


async def test_revoking_a_client_token_with_client_authentication(
    app: Quart, client: Client, machine: ClientCredentials, inspector: ClientCredentials
) -> None:
    token = (await client_token(client, machine))["access_token"]
    claims = get_state(app).accounts.decode(token, expected_type="access")
    await get_state(app).accounts.clients.live_client(claims)  # known, and cached

    response = await client.post("/revoke", form={"token": token}, headers=basic_of(machine))

    assert response.status_code == 200
    with pytest.raises(TokenRevoked):
        await get_state(app).accounts.clients.live_client(claims)
    assert await introspect(client, inspector, token) == {"active": False}


@pytest.mark.parametrize("token", ["not.a.token", "x", "a" * 8192])
async def test_revoking_what_is_no_token_is_still_200(client: Client, token: str) -> None:
    response = await client.post("/revoke", form={"token": token})

    assert response.status_code == 200
    assert await response.get_json() == {}


async def test_revoke_with_wrong_client_credentials_is_401_and_revokes_nothing(
    client: Client,
    tokens: dict[str, Any],
    auth_headers: dict[str, str],
    machine: ClientCredentials,
) -> None:
    response = await client.post(
        "/revoke",
        form={"token": tokens["access_token"]},
        headers=basic(machine.client.client_id, "not-the-secret"),
    )

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE
    assert (await response.get_json())["error"] == "invalid_client"
    assert (await client.get("/protected", headers=auth_headers)).status_code == 200


async def test_revoke_without_a_token_is_invalid_request(client: Client) -> None:
    response = await client.post("/revoke", form={"token_type_hint": "access_token"})

    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_request"


async def test_introspection_of_a_users_access_token_gives_its_roles(
    app: Quart, client: Client, user: SignedUp, inspector: ClientCredentials
) -> None:
    await get_state(app).accounts.set_roles("alice", ["admin", "auditor"])
    login = await client.post("/login", json={"username": "alice", "password": user.password})
    access_token = (await login.get_json())["access_token"]

    body = await introspect(client, inspector, access_token)

    assert body["active"] is True
    assert body["roles"] == ["admin", "auditor"]
