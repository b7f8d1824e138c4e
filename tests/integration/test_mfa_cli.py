"""``python -m service users reset-mfa USERNAME``: the operator's way back for a user who lost
every second factor."""

from __future__ import annotations

import json
from pathlib import Path

import pyotp

from tests.commands import InProcessCommand
from tests.support import PASSWORD, bearer, make_settings, running_app, signup_and_login


async def test_reset_mfa_removes_the_second_factor_and_ends_the_sessions(
    tmp_path: Path, service_command: InProcessCommand
) -> None:
    settings = make_settings(tmp_path)
    async with running_app(settings) as app:
        client = app.test_client()
        pair = await signup_and_login(client)
        headers = bearer(pair["access_token"])
        setup = await (await client.post("/mfa/totp/setup", headers=headers)).get_json()
        confirm = await client.post(
            "/mfa/totp/confirm", json={"code": pyotp.TOTP(setup["secret"]).now()}, headers=headers
        )
        assert confirm.status_code == 200
        before = await client.post("/login", json={"username": "alice", "password": PASSWORD})

        reset = await service_command("users", "reset-mfa", "alice")
        missing = await service_command("users", "reset-mfa", "nobody")

        after = await client.post("/login", json={"username": "alice", "password": PASSWORD})
        old_token = await client.get("/me", headers=headers)
        old_refresh = await client.post("/refresh", json={"refresh_token": pair["refresh_token"]})
        mfa_token = (await before.get_json())["mfa_token"]
        old_step = await client.post(
            "/login/mfa",
            json={"mfa_token": mfa_token, "code": pyotp.TOTP(setup["secret"]).now()},
        )

    assert before.status_code == 403
    assert reset.returncode == 0, reset.stderr
    # (The running app's audit log shares this process's stdout: the answer is the last line.)
    assert json.loads(reset.stdout.splitlines()[-1])["username"] == "alice"
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1
    assert "nobody" in missing.stderr
    assert after.status_code == 200  # the password alone logs in again
    assert old_token.status_code == 401
    assert (await old_token.get_json())["code"] == "TOKEN_REVOKED"
    assert old_refresh.status_code == 401
    assert old_step.status_code == 401  # a login step begun before the reset is dead
