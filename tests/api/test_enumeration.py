"""Unknown user, wrong password and disabled account: same answer, same work.

The time itself is measured in bench/ (timing belongs there, not in assertions); here the test
proves the cause of equal timing: each failure costs exactly one full hash verification with
the same parameters, and the answers are byte-for-byte the same.
"""

from __future__ import annotations

from typing import Any

from quart import Quart

from service.core.passwords import PasswordHasher, Verification
from service.web.state import get_state
from tests.support import PASSWORD, Client, SignedUp


async def test_every_failure_costs_one_verification_with_the_same_parameters(
    app: Quart, client: Client, user: SignedUp
) -> None:
    hasher = get_state(app).accounts.hasher
    verified: list[str] = []
    original = PasswordHasher.verify

    async def counting(self: PasswordHasher, password: str, stored: str | None) -> Verification:
        verified.append(stored if stored is not None else await self.dummy_hash())
        return await original(self, password, stored)

    hasher.verify = counting.__get__(hasher)  # type: ignore[method-assign]
    attempts: dict[str, Any] = {}
    attempts["wrong password"] = await client.post(
        "/login", json={"username": "alice", "password": "not the password"}
    )
    attempts["unknown user"] = await client.post(
        "/login", json={"username": "nobody", "password": PASSWORD}
    )
    await get_state(app).accounts.set_active("alice", active=False)
    attempts["disabled"] = await client.post(
        "/login", json={"username": "alice", "password": PASSWORD}
    )

    bodies = {name: await response.get_data() for name, response in attempts.items()}
    assert len(set(bodies.values())) == 1
    assert {response.status_code for response in attempts.values()} == {401}
    assert len(verified) == 3
    # Same algorithm and cost parameters: the "$argon2id$v=19$m=…,t=…,p=…" prefix.
    assert len({stored.rsplit("$", 2)[0] for stored in verified}) == 1
