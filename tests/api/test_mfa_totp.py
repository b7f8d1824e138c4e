"""The second factor over HTTP, as the contract's "Second factor" section says: TOTP set up and
confirmed, recovery codes, the login step (403 ``MFA_REQUIRED`` → ``POST /login/mfa``), on
SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pyotp
import pytest
from quart import Quart
from sqlalchemy import select, update

from service.store.models import AuthChallenge, TotpFactor
from service.store.unit_of_work import unit_of_work
from service.web.state import get_state
from tests.support import PASSWORD, Client, SignedUp, bearer

NOW = 1_900_000_005.0  # a fixed instant, 5 s into a 30 s time step


class Clock:
    """The second factor's clock, moved by the tests (no sleeping)."""

    def __init__(self, app: Quart) -> None:
        self.now = NOW
        get_state(app).accounts.mfa.clock = lambda: self.now

    def code(self, secret: str, *, steps: int = 0) -> str:
        return pyotp.TOTP(secret).at(int(self.now) + 30 * steps)


@pytest.fixture
def clock(app: Quart) -> Clock:
    return Clock(app)


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


async def login(client: Client, user: SignedUp) -> Any:
    return await client.post("/login", json={"username": user.username, "password": PASSWORD})


async def enable_totp(
    client: Client, auth_headers: dict[str, str], clock: Clock
) -> tuple[str, list[str]]:
    setup = await client.post("/mfa/totp/setup", headers=auth_headers)
    assert setup.status_code == 200, await setup.get_data()
    secret = (await setup.get_json())["secret"]
    confirm = await client.post(
        "/mfa/totp/confirm", json={"code": clock.code(secret)}, headers=auth_headers
    )
    assert confirm.status_code == 200, await confirm.get_data()
    codes: list[str] = (await confirm.get_json())["recovery_codes"]
    clock.now += 30  # the confirming code's step is spent: the next login uses the next one
    return secret, codes


async def mfa_token(client: Client, user: SignedUp) -> str:
    response = await login(client, user)
    assert response.status_code == 403
    token: str = (await response.get_json())["mfa_token"]
    return token


# --- setting up TOTP ------------------------------------------------------------------------


async def test_setup_returns_the_secret_its_uri_and_a_qr_code(
    client: Client, auth_headers: dict[str, str]
) -> None:
    response = await client.post("/mfa/totp/setup", headers=auth_headers)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.get_json()
    assert set(body) == {"secret", "otpauth_uri", "qr_svg"}
    parsed = pyotp.parse_uri(body["otpauth_uri"])
    assert parsed.secret == body["secret"]
    assert parsed.name == "alice"
    assert parsed.issuer == "auth-service"
    assert body["qr_svg"].startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    # Not on before it is confirmed: the password alone still logs in.
    status = await (await client.get("/mfa", headers=auth_headers)).get_json()
    assert status == {"totp": False, "recovery_codes_left": 0, "passkeys": []}


async def test_setup_needs_a_fresh_token(client: Client, tokens: dict[str, Any]) -> None:
    refreshed = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    stale = bearer((await refreshed.get_json())["access_token"])

    response = await client.post("/mfa/totp/setup", headers=stale)

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "FRESH_TOKEN_REQUIRED"


async def test_the_secret_is_stored_sealed_never_in_plain_text(
    app: Quart, client: Client, auth_headers: dict[str, str], clock: Clock
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)

    async with unit_of_work(get_state(app).accounts.database) as uow:
        stored = (await uow.session.scalars(select(TotpFactor))).one()
    assert secret not in stored.secret
    assert secret.lower() not in stored.secret.lower()
    assert stored.secret.startswith("v1.")


async def test_confirming_turns_it_on_and_gives_ten_recovery_codes_once(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    _, codes = await enable_totp(client, auth_headers, clock)

    assert len(codes) == 10
    assert len(set(codes)) == 10
    status = await (await client.get("/mfa", headers=auth_headers)).get_json()
    assert status == {"totp": True, "recovery_codes_left": 10, "passkeys": []}
    # No way to read them again: a new set is the only way.
    again = await client.post("/mfa/totp/confirm", json={"code": "123456"}, headers=auth_headers)
    assert again.status_code == 409
    assert (await again.get_json())["code"] == "MFA_CONFLICT"


async def test_a_wrong_confirming_code_leaves_it_off(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    setup = await (await client.post("/mfa/totp/setup", headers=auth_headers)).get_json()
    wrong = clock.code(setup["secret"], steps=5)

    response = await client.post("/mfa/totp/confirm", json={"code": wrong}, headers=auth_headers)

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "MFA_INVALID"
    assert (await login(client, user)).status_code == 200


async def test_a_second_setup_while_on_is_refused(
    client: Client, auth_headers: dict[str, str], clock: Clock
) -> None:
    await enable_totp(client, auth_headers, clock)

    response = await client.post("/mfa/totp/setup", headers=auth_headers)

    assert response.status_code == 409
    assert (await response.get_json())["code"] == "MFA_CONFLICT"


# --- the login step -------------------------------------------------------------------------


async def test_a_password_login_then_needs_the_second_factor_everywhere(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    await enable_totp(client, auth_headers, clock)
    credentials = {"username": user.username, "password": PASSWORD}

    answers = [
        await client.post("/login", json=credentials),
        await client.post("/session", json=credentials),
        await client.post("/token", form={"grant_type": "password", **credentials}),
    ]

    for response in answers:
        assert response.status_code == 403
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.headers["Cache-Control"] == "no-store"
        assert "Set-Cookie" not in response.headers
        body = await response.get_json()
        assert body["code"] == "MFA_REQUIRED"
        assert body["methods"] == ["totp", "recovery_code"]
        assert 0 < body["expires_in"] <= 300
        assert len(body["mfa_token"]) >= 32
        assert "access_token" not in body
    assert "error" not in await answers[0].get_json()
    assert (await answers[2].get_json())["error"] == "mfa_required"


async def test_a_wrong_password_is_still_only_invalid_credentials(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    await enable_totp(client, auth_headers, clock)

    response = await client.post("/login", json={"username": "alice", "password": "wrong" * 3})

    assert response.status_code == 401
    body = await response.get_json()
    assert body["code"] == "INVALID_CREDENTIALS"
    assert "mfa_token" not in body


async def test_a_totp_code_completes_the_login_with_fresh_tokens_and_amr(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    token = await mfa_token(client, user)

    response = await client.post(
        "/login/mfa", json={"mfa_token": token, "code": clock.code(secret)}
    )

    assert response.status_code == 200
    body = await response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["recovery_codes_left"] is None
    access = claims(body["access_token"])
    assert access["fresh"] is True
    assert access["amr"] == ["pwd", "otp"]
    assert (await client.get("/me", headers=bearer(body["access_token"]))).status_code == 200
    refreshed = await client.post("/refresh", json={"refresh_token": body["refresh_token"]})
    assert claims((await refreshed.get_json())["access_token"])["amr"] == ["pwd", "otp"]


async def test_a_login_without_second_factor_says_pwd(
    client: Client, tokens: dict[str, Any]
) -> None:
    assert claims(tokens["access_token"])["amr"] == ["pwd"]


@pytest.mark.parametrize(("steps", "accepted"), [(-1, True), (1, True), (-2, False), (2, False)])
async def test_one_time_step_of_tolerance_either_side(
    client: Client,
    auth_headers: dict[str, str],
    clock: Clock,
    user: SignedUp,
    steps: int,
    accepted: bool,
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    clock.now += 300  # well past the step that confirmed it
    token = await mfa_token(client, user)

    response = await client.post(
        "/login/mfa", json={"mfa_token": token, "code": clock.code(secret, steps=steps)}
    )

    assert response.status_code == (200 if accepted else 401)


async def test_a_code_accepted_once_is_never_accepted_again(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    code = clock.code(secret)
    first = await client.post(
        "/login/mfa", json={"mfa_token": await mfa_token(client, user), "code": code}
    )
    earlier = clock.code(secret, steps=-1)

    again = await client.post(
        "/login/mfa", json={"mfa_token": await mfa_token(client, user), "code": code}
    )
    older = await client.post(
        "/login/mfa", json={"mfa_token": await mfa_token(client, user), "code": earlier}
    )

    assert first.status_code == 200
    assert again.status_code == 401
    assert (await again.get_json())["code"] == "MFA_INVALID"
    assert older.status_code == 401  # a step before the accepted one is spent too
    clock.now += 30
    fresh_code = clock.code(secret)
    later = await client.post(
        "/login/mfa", json={"mfa_token": await mfa_token(client, user), "code": fresh_code}
    )
    assert later.status_code == 200


async def test_concurrent_logins_with_one_code_let_exactly_one_in(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    tokens = [await mfa_token(client, user) for _ in range(5)]
    code = clock.code(secret)

    answers = await asyncio.gather(
        *(client.post("/login/mfa", json={"mfa_token": t, "code": code}) for t in tokens)
    )

    assert sorted(a.status_code for a in answers) == [200] + [401] * 4


async def test_an_mfa_token_works_once(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    token = await mfa_token(client, user)
    first = await client.post("/login/mfa", json={"mfa_token": token, "code": clock.code(secret)})
    clock.now += 30

    second = await client.post("/login/mfa", json={"mfa_token": token, "code": clock.code(secret)})

    assert first.status_code == 200
    assert second.status_code == 401
    assert (await second.get_json())["code"] == "MFA_INVALID"


async def test_concurrent_completions_of_one_mfa_token_let_one_in(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    _, codes = await enable_totp(client, auth_headers, clock)
    token = await mfa_token(client, user)

    answers = await asyncio.gather(
        *(client.post("/login/mfa", json={"mfa_token": token, "code": c}) for c in codes[:4])
    )

    assert sorted(a.status_code for a in answers) == [200, 401, 401, 401]
    status = await (await client.get("/mfa", headers=auth_headers)).get_json()
    assert status["recovery_codes_left"] == 9  # the refused completions spent no code


async def test_a_wrong_code_leaves_the_mfa_token_usable(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    token = await mfa_token(client, user)

    wrong = await client.post(
        "/login/mfa", json={"mfa_token": token, "code": clock.code(secret, steps=4)}
    )
    right = await client.post("/login/mfa", json={"mfa_token": token, "code": clock.code(secret)})

    assert wrong.status_code == 401
    assert (await wrong.get_json())["code"] == "MFA_INVALID"
    assert right.status_code == 200


async def test_an_expired_mfa_token_is_refused(
    app: Quart, client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    token = await mfa_token(client, user)
    async with unit_of_work(get_state(app).accounts.database, write=True) as uow:
        await uow.session.execute(
            update(AuthChallenge).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await uow.commit()

    response = await client.post(
        "/login/mfa", json={"mfa_token": token, "code": clock.code(secret)}
    )

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "MFA_INVALID"


async def test_the_mfa_token_dies_with_a_password_change(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    token = await mfa_token(client, user)
    changed = await client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": "another long passphrase 42"},
        headers=auth_headers,
    )
    assert changed.status_code == 204

    response = await client.post(
        "/login/mfa", json={"mfa_token": token, "code": clock.code(secret)}
    )

    assert response.status_code == 401
    # The second factor itself survives the password change.
    relogin = await client.post(
        "/login", json={"username": "alice", "password": "another long passphrase 42"}
    )
    assert (await relogin.get_json())["code"] == "MFA_REQUIRED"


async def test_the_mfa_token_dies_with_logout_everywhere(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    token = await mfa_token(client, user)
    assert (await client.post("/logout/all", headers=auth_headers)).status_code == 204

    response = await client.post(
        "/login/mfa", json={"mfa_token": token, "code": clock.code(secret)}
    )

    assert response.status_code == 401


async def test_an_unknown_or_forged_mfa_token_is_refused(client: Client) -> None:
    for token in ["x", "A" * 43, "ü" * 10]:
        response = await client.post("/login/mfa", json={"mfa_token": token, "code": "123456"})
        assert response.status_code == 401
        assert (await response.get_json())["code"] == "MFA_INVALID"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"mfa_token": "t"},
        {"mfa_token": "t", "code": "123456", "credential": {}},
        {"mfa_token": 5, "code": "123456"},
        {"mfa_token": "t", "code": "x" * 65},
    ],
)
async def test_malformed_completions_are_422(client: Client, body: dict[str, Any]) -> None:
    response = await client.post("/login/mfa", json=body)

    assert response.status_code == 422
    assert (await response.get_json())["code"] == "VALIDATION_ERROR"


async def test_wrong_codes_are_throttled_per_account(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    token = await mfa_token(client, user)
    wrong = clock.code(secret, steps=7)

    answers = [
        await client.post("/login/mfa", json={"mfa_token": token, "code": wrong}) for _ in range(6)
    ]
    right = await client.post("/login/mfa", json={"mfa_token": token, "code": clock.code(secret)})

    assert [a.status_code for a in answers] == [401] * 5 + [429]
    assert int(answers[-1].headers["Retry-After"]) > 0
    assert right.status_code == 429  # even the right code waits: the account is throttled


async def test_a_cookie_login_completes_into_session_cookies(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    started = await client.post("/session", json={"username": "alice", "password": PASSWORD})
    token = (await started.get_json())["mfa_token"]

    response = await client.post(
        "/login/mfa", json={"mfa_token": token, "code": clock.code(secret)}
    )

    assert response.status_code == 200
    body = await response.get_json()
    cookies = response.headers.getlist("Set-Cookie")
    assert any(c.startswith("access_token_cookie=") and "HttpOnly" in c for c in cookies)
    assert any(c.startswith("csrf_access_token=") for c in cookies)
    assert body["csrf_token"] == claims(body["access_token"])["csrf"]


async def test_a_cookie_login_step_from_another_site_is_refused(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    started = await client.post("/session", json={"username": "alice", "password": PASSWORD})
    token = (await started.get_json())["mfa_token"]

    response = await client.post(
        "/login/mfa",
        json={"mfa_token": token, "code": clock.code(secret)},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )

    assert response.status_code == 403
    assert (await response.get_json())["code"] == "CSRF_FAILED"
    assert "Set-Cookie" not in response.headers


# --- recovery codes -------------------------------------------------------------------------


async def test_a_recovery_code_works_once_and_says_how_many_are_left(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    _, codes = await enable_totp(client, auth_headers, clock)
    typed = codes[0].upper().replace("-", " ")  # any case, any separator

    first = await client.post(
        "/login/mfa", json={"mfa_token": await mfa_token(client, user), "code": typed}
    )
    second = await client.post(
        "/login/mfa", json={"mfa_token": await mfa_token(client, user), "code": codes[0]}
    )

    assert first.status_code == 200
    body = await first.get_json()
    assert body["recovery_codes_left"] == 9
    assert claims(body["access_token"])["amr"] == ["pwd", "otp"]
    assert second.status_code == 401
    assert (await second.get_json())["code"] == "MFA_INVALID"


async def test_concurrent_uses_of_one_recovery_code_let_one_in(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    _, codes = await enable_totp(client, auth_headers, clock)
    tokens = [await mfa_token(client, user) for _ in range(5)]

    answers = await asyncio.gather(
        *(client.post("/login/mfa", json={"mfa_token": t, "code": codes[3]}) for t in tokens)
    )

    assert sorted(a.status_code for a in answers) == [200, 401, 401, 401, 401]


async def test_a_new_set_of_recovery_codes_kills_the_old_one(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    _, old = await enable_totp(client, auth_headers, clock)

    response = await client.post("/mfa/recovery-codes", headers=auth_headers)

    assert response.status_code == 200
    new = (await response.get_json())["recovery_codes"]
    assert len(new) == 10
    assert not set(new) & set(old)
    refused = await client.post(
        "/login/mfa", json={"mfa_token": await mfa_token(client, user), "code": old[0]}
    )
    assert refused.status_code == 401
    accepted = await client.post(
        "/login/mfa", json={"mfa_token": await mfa_token(client, user), "code": new[0]}
    )
    assert accepted.status_code == 200


async def test_a_new_set_needs_a_fresh_token_and_a_second_factor(
    client: Client, tokens: dict[str, Any], auth_headers: dict[str, str]
) -> None:
    without = await client.post("/mfa/recovery-codes", headers=auth_headers)
    refreshed = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    stale = await client.post(
        "/mfa/recovery-codes", headers=bearer((await refreshed.get_json())["access_token"])
    )

    assert without.status_code == 409
    assert stale.status_code == 401
    assert (await stale.get_json())["code"] == "FRESH_TOKEN_REQUIRED"


# --- turning it off -------------------------------------------------------------------------


async def test_turning_totp_off_needs_a_fresh_token_and_a_current_code(
    client: Client,
    tokens: dict[str, Any],
    auth_headers: dict[str, str],
    clock: Clock,
    user: SignedUp,
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    refreshed = await client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    stale = bearer((await refreshed.get_json())["access_token"])

    not_fresh = await client.delete("/mfa/totp", json={"code": clock.code(secret)}, headers=stale)
    wrong = await client.delete(
        "/mfa/totp",
        json={"code": clock.code(secret, steps=9)},
        headers=auth_headers,
    )
    off = await client.delete("/mfa/totp", json={"code": clock.code(secret)}, headers=auth_headers)

    assert not_fresh.status_code == 401
    assert (await not_fresh.get_json())["code"] == "FRESH_TOKEN_REQUIRED"
    assert wrong.status_code == 401
    assert (await wrong.get_json())["code"] == "MFA_INVALID"
    assert off.status_code == 204
    assert (await login(client, user)).status_code == 200
    status = await (await client.get("/mfa", headers=auth_headers)).get_json()
    assert status == {"totp": False, "recovery_codes_left": 0, "passkeys": []}
