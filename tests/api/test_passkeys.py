"""Passkeys over HTTP (the contract's "Second factor" section, Passkeys bullet): registration,
the list, passwordless login with discoverable credentials, and the second step of a password
login; on SQLite and on PostgreSQL with Redis. The browser is played by the software
authenticator of tests/webauthn_authenticator.py."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from datetime import timedelta
from typing import Any

import jwt
import pytest
from quart import Quart

from service.accounts import passkeys as passkeys_module
from service.accounts.sessions import ClientInfo, utc_now
from service.core.errors import MfaInvalid
from service.web.state import get_state
from tests.support import (
    PASSWORD,
    Client,
    SettingsFactory,
    SignedUp,
    bearer,
    running_app,
    signup_and_login,
)
from tests.webauthn_authenticator import SoftAuthenticator, b64url, unb64url

SAME_SITE = {"Sec-Fetch-Site": "same-origin"}
LOCAL = ClientInfo(user_agent="test", ip="127.0.0.1")


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def authenticator(app: Quart, **kwargs: Any) -> SoftAuthenticator:
    rp = get_state(app).accounts.passkeys.rp
    return SoftAuthenticator(rp_id=rp.id, origin=rp.origin, **kwargs)


async def json_of(response: Any) -> Any:
    return await response.get_json()


async def registration_options(client: Client, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.post("/passkeys/register/options", headers=headers)
    assert response.status_code == 200, await response.get_data(as_text=True)
    options: dict[str, Any] = await response.get_json()
    return options


async def register(
    client: Client, headers: dict[str, str], device: SoftAuthenticator, **body: Any
) -> dict[str, Any]:
    options = await registration_options(client, headers)
    response = await client.post(
        "/passkeys/register", json={"credential": device.create(options), **body}, headers=headers
    )
    assert response.status_code == 201, await response.get_data(as_text=True)
    passkey: dict[str, Any] = await response.get_json()
    return passkey


async def login_options(client: Client, **body: Any) -> dict[str, Any]:
    response = await client.post("/passkeys/login/options", json=body)
    assert response.status_code == 200, await response.get_data(as_text=True)
    options: dict[str, Any] = await response.get_json()
    return options


async def passkey_login(client: Client, credential: Any, **body: Any) -> Any:
    return await client.post("/passkeys/login", json={"credential": credential, **body})


@pytest.fixture
async def device(app: Quart, client: Client, auth_headers: dict[str, str]) -> SoftAuthenticator:
    """alice's registered passkey (a device-bound key with a counter)."""
    key = authenticator(app)
    await register(client, auth_headers, key)
    return key


async def stale_headers(client: Client, tokens: dict[str, Any]) -> dict[str, str]:
    """An access token that is not fresh: the one a refresh gives."""
    response = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 200
    return bearer((await response.get_json())["access_token"])


# --- registration ------------------------------------------------------------------------------


async def test_registration_options_are_for_a_discoverable_credential_of_this_rp(
    app: Quart, client: Client, user: SignedUp, auth_headers: dict[str, str]
) -> None:
    options = await registration_options(client, auth_headers)

    assert options["rp"] == {"id": "127.0.0.1", "name": "auth-service"}
    assert options["user"] == {
        "id": b64url(uuid.UUID(user.id).bytes),
        "name": "alice",
        "displayName": "alice",
    }
    assert len(unb64url(options["challenge"])) == 32
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [-7, -8, -257]
    assert options["authenticatorSelection"] == {
        "residentKey": "required",
        "requireResidentKey": True,
        "userVerification": "preferred",
    }
    assert options["attestation"] == "none"
    assert options["excludeCredentials"] == []


async def test_registration_options_exclude_the_users_passkeys(
    client: Client, device: SoftAuthenticator, auth_headers: dict[str, str]
) -> None:
    options = await registration_options(client, auth_headers)

    assert options["excludeCredentials"] == [
        {"id": b64url(device.credential_id), "type": "public-key", "transports": ["internal"]}
    ]


async def test_registration_needs_a_fresh_token(client: Client, tokens: dict[str, Any]) -> None:
    headers = await stale_headers(client, tokens)

    response = await client.post("/passkeys/register/options", headers=headers)

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "FRESH_TOKEN_REQUIRED"


async def test_registering_answers_the_passkey_and_lists_it(
    app: Quart, client: Client, auth_headers: dict[str, str]
) -> None:
    passkey = await register(client, auth_headers, authenticator(app))
    named = await register(client, auth_headers, authenticator(app), name="  Work laptop ")

    assert set(passkey) == {"id", "name", "created_at", "last_used_at"}
    assert passkey["name"] == "Passkey 1"
    assert passkey["last_used_at"] is None
    assert named["name"] == "Work laptop"
    listed = await json_of(await client.get("/passkeys", headers=auth_headers))
    assert listed == [passkey, named]


async def test_a_registration_challenge_works_once(
    app: Quart, client: Client, auth_headers: dict[str, str]
) -> None:
    device = authenticator(app)
    options = await registration_options(client, auth_headers)
    credential = device.create(options)
    first = await client.post(
        "/passkeys/register", json={"credential": credential}, headers=auth_headers
    )

    again = await client.post(
        "/passkeys/register", json={"credential": credential}, headers=auth_headers
    )

    assert first.status_code == 201
    assert again.status_code == 422
    assert (await again.get_json())["errors"][0]["loc"] == ["body", "credential"]


async def test_a_credential_registered_already_is_409(
    client: Client, device: SoftAuthenticator, auth_headers: dict[str, str]
) -> None:
    options = await registration_options(client, auth_headers)

    response = await client.post(
        "/passkeys/register", json={"credential": device.create(options)}, headers=auth_headers
    )

    assert response.status_code == 409
    assert (await response.get_json())["code"] == "PASSKEY_EXISTS"


@pytest.mark.parametrize(
    "wrong",
    [
        {"origin": "https://evil.example"},
        {"origin": "http://127.0.0.1:8001"},
        {"rp_id": "evil.example"},
        {"challenge": b64url(b"\x01" * 32)},
        {"up": False},
        {"cross_origin": True},
    ],
    ids=["origin", "port", "rp-id", "challenge", "no-presence", "cross-origin"],
)
async def test_a_registration_that_does_not_verify_is_422(
    app: Quart, client: Client, auth_headers: dict[str, str], wrong: dict[str, Any]
) -> None:
    options = await registration_options(client, auth_headers)

    response = await client.post(
        "/passkeys/register",
        json={"credential": authenticator(app).create(options, **wrong)},
        headers=auth_headers,
    )

    assert response.status_code == 422
    assert await json_of(await client.get("/passkeys", headers=auth_headers)) == []


async def test_another_users_registration_challenge_is_refused(
    app: Quart, client: Client, auth_headers: dict[str, str]
) -> None:
    bob = await signup_and_login(client, "bob")
    options = await registration_options(client, bearer(bob["access_token"]))

    response = await client.post(
        "/passkeys/register",
        json={"credential": authenticator(app).create(options)},
        headers=auth_headers,
    )

    assert response.status_code == 422


async def test_a_name_longer_than_64_characters_is_422(
    app: Quart, client: Client, auth_headers: dict[str, str]
) -> None:
    options = await registration_options(client, auth_headers)

    response = await client.post(
        "/passkeys/register",
        json={"credential": authenticator(app).create(options), "name": "x" * 65},
        headers=auth_headers,
    )

    assert response.status_code == 422
    assert (await response.get_json())["errors"][0]["loc"][:2] == ["body", "name"]


# --- the list ----------------------------------------------------------------------------------


async def test_rename_and_delete_a_passkey(
    client: Client, device: SoftAuthenticator, auth_headers: dict[str, str]
) -> None:
    [passkey] = await json_of(await client.get("/passkeys", headers=auth_headers))

    renamed = await client.patch(
        f"/passkeys/{passkey['id']}", json={"name": "Phone"}, headers=auth_headers
    )
    deleted = await client.delete(f"/passkeys/{passkey['id']}", headers=auth_headers)

    assert renamed.status_code == 200
    assert await renamed.get_json() == {**passkey, "name": "Phone"}
    assert deleted.status_code == 204
    assert await json_of(await client.get("/passkeys", headers=auth_headers)) == []
    options = await login_options(client)
    refused = await passkey_login(client, device.get(options))
    assert refused.status_code == 401


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tab\there", "bell\x07"])
async def test_a_name_that_is_empty_too_long_or_has_controls_is_422(
    client: Client, device: SoftAuthenticator, auth_headers: dict[str, str], name: str
) -> None:
    [passkey] = await json_of(await client.get("/passkeys", headers=auth_headers))

    response = await client.patch(
        f"/passkeys/{passkey['id']}", json={"name": name}, headers=auth_headers
    )

    assert response.status_code == 422
    assert await json_of(await client.get("/passkeys", headers=auth_headers)) == [passkey]


async def test_another_users_passkey_is_404(
    client: Client, device: SoftAuthenticator, auth_headers: dict[str, str]
) -> None:
    [passkey] = await json_of(await client.get("/passkeys", headers=auth_headers))
    bob = bearer((await signup_and_login(client, "bob"))["access_token"])

    renamed = await client.patch(f"/passkeys/{passkey['id']}", json={"name": "Mine"}, headers=bob)
    deleted = await client.delete(f"/passkeys/{passkey['id']}", headers=bob)
    unknown = await client.delete(f"/passkeys/{uuid.uuid4()}", headers=auth_headers)

    assert (renamed.status_code, deleted.status_code, unknown.status_code) == (404, 404, 404)
    assert await json_of(await client.get("/passkeys", headers=bob)) == []
    assert await json_of(await client.get("/passkeys", headers=auth_headers)) == [passkey]


async def test_deleting_a_passkey_needs_a_fresh_token(
    client: Client, device: SoftAuthenticator, tokens: dict[str, Any], auth_headers: dict[str, str]
) -> None:
    [passkey] = await json_of(await client.get("/passkeys", headers=auth_headers))
    headers = await stale_headers(client, tokens)

    response = await client.delete(f"/passkeys/{passkey['id']}", headers=headers)

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "FRESH_TOKEN_REQUIRED"


# --- passwordless login ------------------------------------------------------------------------


async def test_login_options_ask_for_a_discoverable_credential_with_verification(
    client: Client,
) -> None:
    options = await login_options(client)
    no_body = await client.post("/passkeys/login/options")

    assert options["rpId"] == "127.0.0.1"
    assert options["allowCredentials"] == []
    assert options["userVerification"] == "required"
    assert len(unb64url(options["challenge"])) == 32
    assert no_body.status_code == 200


async def test_a_passkey_logs_in_without_a_username(
    client: Client, user: SignedUp, device: SoftAuthenticator, auth_headers: dict[str, str]
) -> None:
    options = await login_options(client)

    response = await passkey_login(client, device.get(options))

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    pair = await response.get_json()
    claims = claims_of(pair["access_token"])
    assert claims["sub"] == user.id
    assert claims["fresh"] is True
    assert claims["amr"] == ["hwk"]
    assert (await client.get("/me", headers=bearer(pair["access_token"]))).status_code == 200
    [passkey] = await json_of(await client.get("/passkeys", headers=auth_headers))
    assert passkey["last_used_at"] is not None


async def test_a_synced_passkey_is_swk(
    app: Quart, client: Client, auth_headers: dict[str, str]
) -> None:
    synced = authenticator(app, backup_eligible=True, backed_up=True, counter_step=0)
    await register(client, auth_headers, synced)

    first = await passkey_login(client, synced.get(await login_options(client)))
    second = await passkey_login(client, synced.get(await login_options(client)))

    assert first.status_code == second.status_code == 200
    assert claims_of((await first.get_json())["access_token"])["amr"] == ["swk"]


async def test_an_assertion_works_once(client: Client, device: SoftAuthenticator) -> None:
    credential = device.get(await login_options(client))
    first = await passkey_login(client, credential)

    replayed = await passkey_login(client, credential)

    assert first.status_code == 200
    assert replayed.status_code == 401
    assert (await replayed.get_json())["code"] == "INVALID_CREDENTIALS"


async def test_a_challenge_works_once_for_a_counterless_passkey_too(
    app: Quart, client: Client, auth_headers: dict[str, str]
) -> None:
    # Synced passkeys keep their counter at 0: only the spent challenge refuses the replay.
    synced = authenticator(app, backup_eligible=True, counter_step=0)
    await register(client, auth_headers, synced)
    credential = synced.get(await login_options(client))
    first = await passkey_login(client, credential)

    replayed = await passkey_login(client, credential)

    assert first.status_code == 200
    assert replayed.status_code == 401


@pytest.mark.parametrize(
    "wrong",
    [
        {"origin": "https://evil.example"},
        {"rp_id": "evil.example"},
        {"challenge": b64url(b"\x02" * 32)},
        {"up": False},
        {"cross_origin": True},
    ],
    ids=["origin", "rp-id", "challenge", "no-presence", "cross-origin"],
)
async def test_an_assertion_that_does_not_verify_is_401(
    client: Client, device: SoftAuthenticator, wrong: dict[str, Any]
) -> None:
    response = await passkey_login(client, device.get(await login_options(client), **wrong))

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "INVALID_CREDENTIALS"


async def test_an_expired_challenge_is_refused(
    client: Client, device: SoftAuthenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    credential = device.get(await login_options(client))
    later = utc_now() + timedelta(seconds=301)
    monkeypatch.setattr(passkeys_module, "utc_now", lambda: later)

    response = await passkey_login(client, credential)

    assert response.status_code == 401


async def test_a_challenge_of_another_ceremony_is_refused(
    client: Client, device: SoftAuthenticator, auth_headers: dict[str, str]
) -> None:
    register_challenge = (await registration_options(client, auth_headers))["challenge"]
    mfa = await client.post("/login", json={"username": "alice", "password": PASSWORD})
    mfa_token = (await mfa.get_json())["mfa_token"]
    mfa_challenge = (await login_options(client, mfa_token=mfa_token))["challenge"]

    for challenge in (register_challenge, mfa_challenge):
        credential = device.get({}, challenge=challenge)
        response = await passkey_login(client, credential)
        assert response.status_code == 401, challenge


async def test_a_counter_that_did_not_increase_is_a_clone(
    client: Client, device: SoftAuthenticator, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await passkey_login(client, device.get(await login_options(client)))).status_code == 200
    used = device.sign_count

    with caplog.at_level(logging.INFO, logger="service.audit"):
        same = await passkey_login(client, device.get(await login_options(client), sign_count=used))
        lower = await passkey_login(
            client, device.get(await login_options(client), sign_count=used - 1)
        )
    higher = await passkey_login(client, device.get(await login_options(client)))

    assert same.status_code == lower.status_code == 401
    assert higher.status_code == 200
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "service.audit"]
    assert [line["reason"] for line in lines if line["outcome"] == "failed"] == [
        "passkey-cloned",
        "passkey-cloned",
    ]


async def test_user_verification_is_required_for_a_passwordless_login(
    client: Client, device: SoftAuthenticator
) -> None:
    response = await passkey_login(client, device.get(await login_options(client), uv=False))

    assert response.status_code == 401


async def test_a_user_handle_that_is_not_the_owners_is_refused(
    client: Client, device: SoftAuthenticator
) -> None:
    bob = await signup_and_login(client, "bob")
    bob_id = uuid.UUID(claims_of(bob["access_token"])["sub"])
    options = await login_options(client)

    forged = await passkey_login(client, device.get(options, user_handle=bob_id.bytes))
    missing = device.get(await login_options(client))
    missing["response"]["userHandle"] = None

    assert forged.status_code == 401
    assert (await passkey_login(client, missing)).status_code == 401


async def test_a_disabled_user_cannot_log_in_with_a_passkey(
    app: Quart, client: Client, device: SoftAuthenticator
) -> None:
    await get_state(app).accounts.set_active("alice", active=False)

    response = await passkey_login(client, device.get(await login_options(client)))

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "ACCOUNT_DISABLED"


async def test_the_cookie_session_sets_cookies_for_this_site_only(
    client: Client, device: SoftAuthenticator
) -> None:
    cross = await client.post(
        "/passkeys/login",
        json={"credential": device.get(await login_options(client)), "session": "cookie"},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    same = await client.post(
        "/passkeys/login",
        json={"credential": device.get(await login_options(client)), "session": "cookie"},
        headers=SAME_SITE,
    )

    assert cross.status_code == 403
    assert (await cross.get_json())["code"] == "CSRF_FAILED"
    assert same.status_code == 200
    body = await same.get_json()
    assert body["username"] == "alice"
    assert body["csrf_token"]
    assert "access_token" not in body
    cookies = " ".join(same.headers.getlist("Set-Cookie"))
    assert "access_token_cookie=" in cookies
    assert "refresh_token_cookie=" in cookies
    me = await client.get("/me")
    assert me.status_code == 200


async def test_failed_passkey_logins_are_throttled_per_address(
    client: Client, device: SoftAuthenticator
) -> None:
    statuses = [
        (await passkey_login(client, {"id": "x", "rawId": "x", "type": "public-key"})).status_code
        for _ in range(31)
    ]

    assert statuses[:30] == [401] * 30
    assert statuses[30] == 429


async def test_login_options_are_throttled_per_address(client: Client) -> None:
    """Each request stores a challenge: one address cannot fill the table."""
    statuses = [(await client.post("/passkeys/login/options")).status_code for _ in range(31)]

    assert statuses[:30] == [200] * 30
    assert statuses[30] == 429


# --- the second step of a password login -------------------------------------------------------


async def mfa_token_of(client: Client) -> str:
    response = await client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    body = await response.get_json()
    assert body["code"] == "MFA_REQUIRED"
    assert "passkey" in body["methods"]
    token: str = body["mfa_token"]
    return token


async def test_mfa_login_options_are_for_the_users_passkeys(
    client: Client, device: SoftAuthenticator
) -> None:
    options = await login_options(client, mfa_token=await mfa_token_of(client))

    assert options["allowCredentials"] == [
        {"id": b64url(device.credential_id), "type": "public-key", "transports": ["internal"]}
    ]
    assert options["userVerification"] == "preferred"


async def test_mfa_login_options_need_a_live_mfa_token(client: Client) -> None:
    response = await client.post("/passkeys/login/options", json={"mfa_token": "no-such-token"})

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "MFA_INVALID"


async def test_a_passkey_is_the_second_factor_of_its_user_once(
    app: Quart, client: Client, device: SoftAuthenticator
) -> None:
    accounts = get_state(app).accounts
    mfa_token = await mfa_token_of(client)
    credential = device.get(await login_options(client, mfa_token=mfa_token))
    alice = await accounts.verify_credentials("alice", PASSWORD, client=LOCAL)
    bob = await accounts.register(username="bob", email="bob@example.com", password=PASSWORD)

    with pytest.raises(MfaInvalid):
        await accounts.passkeys.verify_second_factor(bob, credential)
    with pytest.raises(MfaInvalid):
        await accounts.passkeys.verify_second_factor(alice, credential, mfa_token="another")
    amr = await accounts.passkeys.verify_second_factor(alice, credential, mfa_token=mfa_token)
    with pytest.raises(MfaInvalid):
        await accounts.passkeys.verify_second_factor(alice, credential)

    assert amr == "hwk"


async def test_a_security_key_without_verification_is_a_second_factor(
    app: Quart, client: Client, device: SoftAuthenticator
) -> None:
    accounts = get_state(app).accounts
    options = await login_options(client, mfa_token=await mfa_token_of(client))
    alice = await accounts.verify_credentials("alice", PASSWORD, client=LOCAL)

    amr = await accounts.passkeys.verify_second_factor(alice, device.get(options, uv=False))

    assert amr == "hwk"


async def test_a_passwordless_challenge_is_not_a_second_factor(
    app: Quart, client: Client, device: SoftAuthenticator
) -> None:
    accounts = get_state(app).accounts
    alice = await accounts.verify_credentials("alice", PASSWORD, client=LOCAL)

    with pytest.raises(MfaInvalid):
        await accounts.passkeys.verify_second_factor(alice, device.get(await login_options(client)))


async def test_a_passkey_completes_a_password_login(
    client: Client, device: SoftAuthenticator
) -> None:
    mfa_token = await mfa_token_of(client)
    credential = device.get(await login_options(client, mfa_token=mfa_token))

    response = await client.post(
        "/login/mfa", json={"mfa_token": mfa_token, "credential": credential}
    )
    replayed = await client.post(
        "/login/mfa", json={"mfa_token": mfa_token, "credential": credential}
    )

    assert response.status_code == 200, await response.get_data(as_text=True)
    claims = claims_of((await response.get_json())["access_token"])
    assert claims["amr"] == ["pwd", "hwk"]
    assert claims["fresh"] is True
    assert replayed.status_code == 401


async def test_an_assertion_for_one_login_step_does_not_complete_another(
    client: Client, device: SoftAuthenticator
) -> None:
    first, second = await mfa_token_of(client), await mfa_token_of(client)
    credential = device.get(await login_options(client, mfa_token=first))

    crossed = await client.post("/login/mfa", json={"mfa_token": second, "credential": credential})

    assert crossed.status_code == 401
    assert (await crossed.get_json())["code"] == "MFA_INVALID"


# --- garbage -----------------------------------------------------------------------------------


GARBAGE: list[Any] = [
    {},
    {"id": 1},
    {"id": "AA", "rawId": "AA", "type": "public-key", "response": "x"},
    {"id": "AA", "rawId": "AA", "type": "nope", "response": {}},
    {"id": "AA", "rawId": "!!", "type": "public-key", "response": {"clientDataJSON": "%%"}},
    {
        "id": "AA",
        "rawId": "AA",
        "type": "public-key",
        "response": {
            "clientDataJSON": b64url(b"not json"),
            "authenticatorData": "AA",
            "signature": "AA",
            "attestationObject": "AA",
            "userHandle": 7,
        },
    },
    {
        "id": "AA",
        "rawId": "AA",
        "type": "public-key",
        "response": {
            "clientDataJSON": b64url(b'{"type":"webauthn.get","challenge":5,"origin":[]}'),
            "authenticatorData": b64url(b"\x00" * 10),
            "signature": "",
            "attestationObject": b64url(b"\xff\xfe"),
        },
    },
]


def mutations(credential: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """The credential with bytes of its binary fields flipped, truncated or emptied."""
    rng = random.Random(seed)
    out = []
    for name, value in credential["response"].items():
        if not isinstance(value, str) or not value:
            continue
        raw = bytearray(unb64url(value))
        for change in ("flip", "cut", "empty"):
            mutated = json.loads(json.dumps(credential))
            if change == "flip" and raw:
                flipped = bytearray(raw)
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
                mutated["response"][name] = b64url(bytes(flipped))
            elif change == "cut":
                mutated["response"][name] = b64url(bytes(raw[: rng.randrange(len(raw) or 1)]))
            else:
                mutated["response"][name] = ""
            out.append(mutated)
    return out


async def test_garbage_credentials_are_4xx_never_500(
    app: Quart, client: Client, device: SoftAuthenticator, auth_headers: dict[str, str]
) -> None:
    get_state(app).accounts.throttle = None  # this test sends far more than the limit
    assertion = device.get(await login_options(client))
    registration = authenticator(app).create(await registration_options(client, auth_headers))
    statuses = set()
    for credential in [*GARBAGE, *mutations(assertion, 1), "text", [1, 2], None]:
        statuses.add((await passkey_login(client, credential)).status_code)
    for credential in [*GARBAGE, *mutations(registration, 2), "text", None]:
        response = await client.post(
            "/passkeys/register", json={"credential": credential}, headers=auth_headers
        )
        statuses.add(response.status_code)

    assert statuses <= {401, 422}
    assert await json_of(await client.get("/passkeys", headers=auth_headers)) != []


async def test_concurrent_logins_with_one_assertion_let_exactly_one_in(
    app: Quart, client: Client, auth_headers: dict[str, str]
) -> None:
    synced = authenticator(app, backup_eligible=True, counter_step=0)
    await register(client, auth_headers, synced)
    credential = synced.get(await login_options(client))

    responses = await asyncio.gather(*(passkey_login(client, credential) for _ in range(4)))

    assert sorted(response.status_code for response in responses) == [200, 401, 401, 401]


async def test_an_unverified_address_is_refused_when_verification_is_required(
    settings_factory: SettingsFactory,
) -> None:
    async with running_app(settings_factory(require_verified_email=True)) as app:
        accounts = get_state(app).accounts
        alice = await accounts.register(
            username="alice", email="alice@example.com", password=PASSWORD
        )
        device = authenticator(app)
        options = await accounts.passkeys.registration_options(alice)
        await accounts.passkeys.register(alice, device.create(options), None)
        client = app.test_client()

        response = await passkey_login(client, device.get(await login_options(client)))

    assert response.status_code == 403
    assert (await response.get_json())["code"] == "EMAIL_NOT_VERIFIED"
