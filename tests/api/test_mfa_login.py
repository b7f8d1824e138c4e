"""The login step (``POST /login/mfa``) beyond the basics of ``test_mfa_totp.py``: its binding to
one user's login, the account re-checked at completion, the throttle across addresses, what a
finished setup spends, and what the audit log and the metrics say. SQLite and PostgreSQL +
Redis (the ``backend`` fixture)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY
from quart import Quart
from sqlalchemy import update

from service.core.audit import AUDIT_LOGGER
from service.store.models import Passkey, User
from service.store.unit_of_work import unit_of_work
from service.web.state import get_state
from tests.api.test_mfa_totp import Clock, claims, enable_totp, login, mfa_token
from tests.support import PASSWORD, Client, SettingsFactory, SignedUp, bearer, running_app

BOB = {"username": "bob", "email": "bob@example.com", "password": PASSWORD}


@pytest.fixture
def clock(app: Quart) -> Clock:
    return Clock(app)


async def set_user(app: Quart, username: str, **values: Any) -> None:
    """Change the row directly: what another process (or an operator's SQL) might do."""
    async with unit_of_work(get_state(app).accounts.database, write=True) as uow:
        await uow.session.execute(update(User).where(User.username == username).values(**values))
        await uow.commit()


async def bob_with_totp(client: Client, clock: Clock) -> str:
    assert (await client.post("/signup", json=BOB)).status_code == 201
    pair = await (await client.post("/login", json=BOB)).get_json()
    secret, _ = await enable_totp(client, bearer(pair["access_token"]), clock)
    return secret


def audit_events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == AUDIT_LOGGER]
    return [(line["event"], line["outcome"]) for line in lines]


async def test_one_users_mfa_token_cannot_be_completed_with_another_users_code(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    await enable_totp(client, auth_headers, clock)
    bob_secret = await bob_with_totp(client, clock)
    alices_token = await mfa_token(client, user)

    crossed = await client.post(
        "/login/mfa", json={"mfa_token": alices_token, "code": clock.code(bob_secret)}
    )
    bobs = await client.post("/login", json=BOB)
    own = await client.post(
        "/login/mfa",
        json={"mfa_token": (await bobs.get_json())["mfa_token"], "code": clock.code(bob_secret)},
    )

    assert crossed.status_code == 401
    assert (await crossed.get_json())["code"] == "MFA_INVALID"
    assert own.status_code == 200  # bob's code was not spent by the crossed attempt
    assert claims((await own.get_json())["access_token"])["sub"] != user.id


async def test_a_recovery_code_of_another_user_is_refused(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    await enable_totp(client, auth_headers, clock)
    assert (await client.post("/signup", json=BOB)).status_code == 201
    bob_pair = await (await client.post("/login", json=BOB)).get_json()
    _, bob_codes = await enable_totp(client, bearer(bob_pair["access_token"]), clock)

    response = await client.post(
        "/login/mfa", json={"mfa_token": await mfa_token(client, user), "code": bob_codes[0]}
    )

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "MFA_INVALID"


async def test_an_account_disabled_after_the_password_cannot_complete(
    app: Quart, client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    token = await mfa_token(client, user)
    await set_user(app, "alice", is_active=False)

    response = await client.post(
        "/login/mfa", json={"mfa_token": token, "code": clock.code(secret)}
    )

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "ACCOUNT_DISABLED"
    assert "access_token" not in await response.get_json()


async def test_disabling_the_account_kills_its_login_steps(
    app: Quart, client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    token = await mfa_token(client, user)
    accounts = get_state(app).accounts
    await accounts.set_active("alice", active=False)
    await accounts.set_active("alice", active=True)

    response = await client.post(
        "/login/mfa", json={"mfa_token": token, "code": clock.code(secret)}
    )

    assert response.status_code == 401
    assert (await response.get_json())["code"] == "MFA_INVALID"


async def test_an_address_unverified_after_the_password_cannot_complete(
    settings_factory: SettingsFactory,
) -> None:
    async with running_app(settings_factory(require_verified_email=True)) as app:
        client = app.test_client()
        assert (await client.post("/signup", json=BOB)).status_code == 201
        await set_user(app, "bob", email_verified=True)
        pair = await (await client.post("/login", json=BOB)).get_json()
        clock = Clock(app)
        secret, _ = await enable_totp(client, bearer(pair["access_token"]), clock)
        started = await client.post("/login", json=BOB)
        token = (await started.get_json())["mfa_token"]
        await set_user(app, "bob", email_verified=False)

        response = await client.post(
            "/login/mfa", json={"mfa_token": token, "code": clock.code(secret)}
        )

    assert started.status_code == 403
    assert response.status_code == 403
    assert (await response.get_json())["code"] == "EMAIL_NOT_VERIFIED"


async def test_wrong_codes_from_many_addresses_are_counted_together(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    token = await mfa_token(client, user)
    wrong = clock.code(secret, steps=7)

    answers = [
        await client.post(
            "/login/mfa",
            json={"mfa_token": token, "code": wrong},
            scope_base={"client": (f"198.51.100.{n}", 40000)},
        )
        for n in range(6)
    ]

    assert [a.status_code for a in answers] == [401] * 5 + [429]
    assert (await answers[-1].get_json())["code"] == "TOO_MANY_ATTEMPTS"


async def test_the_confirming_code_cannot_log_in(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    setup = await (await client.post("/mfa/totp/setup", headers=auth_headers)).get_json()
    code = clock.code(setup["secret"])
    confirm = await client.post("/mfa/totp/confirm", json={"code": code}, headers=auth_headers)
    assert confirm.status_code == 200

    response = await client.post(
        "/login/mfa", json={"mfa_token": await mfa_token(client, user), "code": code}
    )

    assert response.status_code == 401  # its time step was spent turning TOTP on


async def test_a_new_setup_replaces_an_unconfirmed_one(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    first = await (await client.post("/mfa/totp/setup", headers=auth_headers)).get_json()
    second = await (await client.post("/mfa/totp/setup", headers=auth_headers)).get_json()

    stale = await client.post(
        "/mfa/totp/confirm", json={"code": clock.code(first["secret"])}, headers=auth_headers
    )
    current = await client.post(
        "/mfa/totp/confirm", json={"code": clock.code(second["secret"])}, headers=auth_headers
    )

    assert first["secret"] != second["secret"]
    assert stale.status_code == 401
    assert current.status_code == 200


async def test_a_recovery_code_turns_totp_off_too(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    _, codes = await enable_totp(client, auth_headers, clock)

    off = await client.delete("/mfa/totp", json={"code": codes[0]}, headers=auth_headers)

    assert off.status_code == 204
    assert (await login(client, user)).status_code == 200


async def test_turning_off_what_is_not_on_is_404(
    client: Client, auth_headers: dict[str, str]
) -> None:
    response = await client.delete("/mfa/totp", json={"code": "123456"}, headers=auth_headers)

    assert response.status_code == 404
    assert (await response.get_json())["code"] == "NOT_FOUND"


async def test_the_mfa_routes_need_a_token(client: Client) -> None:
    answers = [
        await client.get("/mfa"),
        await client.post("/mfa/totp/setup"),
        await client.post("/mfa/totp/confirm", json={"code": "123456"}),
        await client.delete("/mfa/totp", json={"code": "123456"}),
        await client.post("/mfa/recovery-codes"),
    ]

    assert [a.status_code for a in answers] == [401] * 5


async def test_a_token_grant_login_completes_at_the_login_step(
    client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    started = await client.post(
        "/token", form={"grant_type": "password", "username": "alice", "password": PASSWORD}
    )

    response = await client.post(
        "/login/mfa",
        json={"mfa_token": (await started.get_json())["mfa_token"], "code": clock.code(secret)},
    )

    assert started.status_code == 403
    assert response.status_code == 200
    assert claims((await response.get_json())["access_token"])["amr"] == ["pwd", "otp"]
    assert "Set-Cookie" not in response.headers


async def test_every_step_is_audited_and_the_completion_counts_as_a_login(
    client: Client,
    auth_headers: dict[str, str],
    clock: Clock,
    user: SignedUp,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def logins(outcome: str) -> float:
        return REGISTRY.get_sample_value("auth_logins_total", {"outcome": outcome}) or 0.0

    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER):
        secret, codes = await enable_totp(client, auth_headers, clock)
        token = await mfa_token(client, user)
        before = {o: logins(o) for o in ("success", "mfa_required")}
        await client.post("/login/mfa", json={"mfa_token": token, "code": "000000"})
        done = await client.post(
            "/login/mfa", json={"mfa_token": token, "code": clock.code(secret)}
        )
        after_success = logins("success")
        await client.post(
            "/login/mfa", json={"mfa_token": await mfa_token(client, user), "code": codes[0]}
        )
        clock.now += 30
        fresh = bearer((await done.get_json())["access_token"])
        off = await client.delete("/mfa/totp", json={"code": clock.code(secret)}, headers=fresh)

    assert off.status_code == 204
    events = audit_events(caplog)
    for expected in [
        ("mfa-setup", "ok"),
        ("mfa-enabled", "ok"),
        ("login", "mfa-required"),
        ("login-mfa", "failed"),
        ("login-mfa", "ok"),
        ("recovery-code-used", "ok"),
        ("mfa-disabled", "ok"),
    ]:
        assert expected in events, (expected, events)
    assert events.index(("login-mfa", "failed")) < events.index(("login-mfa", "ok"))
    assert after_success - before["success"] == 1
    assert logins("mfa_required") - before["mfa_required"] == 1


async def test_reset_removes_totp_recovery_codes_and_passkeys_and_ends_sessions(
    app: Quart, client: Client, auth_headers: dict[str, str], clock: Clock, user: SignedUp
) -> None:
    secret, _ = await enable_totp(client, auth_headers, clock)
    database = get_state(app).accounts.database
    async with unit_of_work(database, write=True) as uow:
        alice = await uow.users.by_login("alice")
        assert alice is not None
        uow.session.add(
            Passkey(user_pk=alice.pk, credential_id=b"cred-1", public_key=b"key", name="Key")
        )
        await uow.commit()
    token = await mfa_token(client, user)

    await get_state(app).accounts.mfa.reset("alice")

    async with unit_of_work(database) as uow:
        left = await uow.second_factors.factors_for(alice.pk)
    assert (left.totp, left.passkeys, left.recovery_codes_left) == (False, 0, 0)
    step = await client.post("/login/mfa", json={"mfa_token": token, "code": clock.code(secret)})
    assert step.status_code == 401
    old = await client.get("/me", headers=auth_headers)
    assert (await old.get_json())["code"] == "TOKEN_REVOKED"
    relogin = await login(client, user)
    assert relogin.status_code == 200
    assert claims((await relogin.get_json())["access_token"])["amr"] == ["pwd"]
