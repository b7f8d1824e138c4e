"""Resource-server mode with real processes: the service, and a downstream app
(examples/resource_server) that verifies its tokens with the JWKS and has no database.

They share only what the contract says they share: the JWKS URL, and Redis (``AUTH_REDIS_URL``
and ``AUTH_REDIS_PREFIX``) for revocations.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from service.core.keys import generate_private_key_pem, key_from_pem
from service.core.tokens import TokenSettings, encode_token
from tests import backends
from tests.servers import Server, clean_env, free_port, run_python, serve

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
DOWNSTREAM_APP = "examples.resource_server.app:app"
JWKS_PATH = "/.well-known/jwks.json"


@dataclass
class Deployment:
    """The service's settings (a key, a SQLite file, a Redis prefix) and the folders used."""

    folder: Path
    key_file: Path
    prefix: str
    previous_key_file: Path | None = None

    def service_env(self) -> dict[str, str]:
        env = clean_env(
            AUTH_ENV="testing",
            AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{self.folder / 'auth.db'}",
            AUTH_JWT_ALGORITHM="ES256",
            AUTH_JWT_PRIVATE_KEY_FILE=str(self.key_file),
            AUTH_REDIS_URL=backends.REDIS_URL,
            AUTH_REDIS_PREFIX=self.prefix,
            AUTH_ARGON2_MEMORY_COST="1024",
            AUTH_ARGON2_TIME_COST="1",
            AUTH_THROTTLE_ENABLED="false",
        )
        if self.previous_key_file is not None:
            env["AUTH_JWT_PREVIOUS_KEY_FILES"] = str(self.previous_key_file)
        return env

    def downstream_env(self, jwks_url: str, **extra: str) -> dict[str, str]:
        # A database URL and an instance folder that must stay untouched: nothing may open them.
        env = clean_env(
            AUTH_ENV="testing",
            AUTH_JWKS_URL=jwks_url,
            AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{self.folder / 'downstream' / 'never.db'}",
            AUTH_INSTANCE_PATH=str(self.folder / "downstream-instance"),
            **extra,
        )
        env.update(AUTH_REDIS_URL=backends.REDIS_URL, AUTH_REDIS_PREFIX=self.prefix)
        return env

    def rotate_key(self) -> None:
        """A new current key; the old one stays as a previous key (still verifies)."""
        old = self.folder / f"previous-{uuid.uuid4().hex[:6]}.pem"
        self.key_file.rename(old)
        self.key_file.write_bytes(generate_private_key_pem("ES256"))
        self.previous_key_file = old


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    backends.check_redis()
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(generate_private_key_pem("ES256"))
    prefix = f"rs-test-{backends.WORKER}-{uuid.uuid4().hex[:8]}"
    yield Deployment(folder=tmp_path, key_file=key_file, prefix=prefix)
    backends.drop_redis_prefix(prefix)


async def sign_up_and_log_in(service: str, username: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=service) as client:
        signup = await client.post(
            "/signup",
            json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
        )
        assert signup.status_code == 201, signup.text
        return await log_in(service, username)


async def log_in(service: str, username: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=service) as client:
        login = await client.post("/login", json={"username": username, "password": PASSWORD})
        assert login.status_code == 200, login.text
        pair: dict[str, str] = login.json()
        return pair


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def stock(downstream: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=downstream) as client:
        return await client.get("/stock", headers=bearer(token))


def service_command(deployment: Deployment, *args: str) -> None:
    result = run_python("-m", "service", *args, cwd=deployment.folder, env=deployment.service_env())
    assert result.returncode == 0, result.stderr


@asynccontextmanager
async def service_and_downstream(
    deployment: Deployment, **downstream_extra: str
) -> AsyncIterator[tuple[Server, Server]]:
    async with serve("service.asgi:app", deployment.service_env(), deployment.folder) as service:
        env = deployment.downstream_env(service.base + JWKS_PATH, **downstream_extra)
        async with serve(DOWNSTREAM_APP, env, deployment.folder) as downstream:
            yield service, downstream


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_a_token_of_the_service_works_downstream_which_opens_no_database(
    deployment: Deployment,
) -> None:
    async with service_and_downstream(deployment) as (service, downstream):
        pair = await sign_up_and_log_in(service.base, "alice")
        response = await stock(downstream.base, pair["access_token"])
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["username"] == "alice"
        async with httpx.AsyncClient(base_url=service.base) as client:
            me = (await client.get("/me", headers=bearer(pair["access_token"]))).json()
        assert body["user_id"] == me["id"]
        assert_refused(await stock(downstream.base, "not-a-token"), 401, "TOKEN_INVALID")
        assert_refused(await stock(downstream.base, pair["refresh_token"]), 401, "WRONG_TOKEN_TYPE")
    assert not (deployment.folder / "downstream").exists()
    assert not (deployment.folder / "downstream-instance").exists()


Revoke = Callable[[Deployment, Server, str], Awaitable[None]]


async def _logout(deployment: Deployment, service: Server, username: str) -> None:
    # The session to revoke is the latest login of ``username``: log out with its own token.
    async with httpx.AsyncClient(base_url=service.base) as client:
        response = await client.post("/logout", headers=bearer(LATEST[username]))
    assert response.status_code == 204


async def _logout_everywhere(deployment: Deployment, service: Server, username: str) -> None:
    other_device = await log_in(service.base, username)
    async with httpx.AsyncClient(base_url=service.base) as client:
        response = await client.post("/logout/all", headers=bearer(other_device["access_token"]))
    assert response.status_code == 204


async def _revoke_session(deployment: Deployment, service: Server, username: str) -> None:
    other_device = await log_in(service.base, username)
    headers = bearer(other_device["access_token"])
    async with httpx.AsyncClient(base_url=service.base) as client:
        sessions = (await client.get("/sessions", headers=headers)).json()
        others = [s["id"] for s in sessions if not s.get("current")]
        assert len(others) == 1, sessions
        response = await client.delete(f"/sessions/{others[0]}", headers=headers)
    assert response.status_code == 204


async def _disable_user(deployment: Deployment, service: Server, username: str) -> None:
    service_command(deployment, "users", "disable", username)


LATEST: dict[str, str] = {}
REVOCATIONS: dict[str, Revoke] = {
    "logout": _logout,
    "logout-all": _logout_everywhere,
    "session-revoked": _revoke_session,
    "user-disabled": _disable_user,
}


async def test_each_revocation_at_the_service_is_refused_downstream_on_the_next_request(
    deployment: Deployment,
) -> None:
    async with service_and_downstream(deployment) as (service, downstream):
        for kind, revoke in REVOCATIONS.items():
            username = kind.replace("-", "_")
            pair = await sign_up_and_log_in(service.base, username)
            LATEST[username] = pair["access_token"]
            assert (await stock(downstream.base, pair["access_token"])).status_code == 200, kind
            await revoke(deployment, service, username)
            response = await stock(downstream.base, pair["access_token"])
            assert (response.status_code, response.json()["code"]) == (401, "TOKEN_REVOKED"), kind


async def test_a_password_change_ends_the_other_sessions_downstream_and_keeps_this_one(
    deployment: Deployment,
) -> None:
    async with service_and_downstream(deployment) as (service, downstream):
        other = await sign_up_and_log_in(service.base, "carol")
        this = await log_in(service.base, "carol")
        async with httpx.AsyncClient(base_url=service.base) as client:
            changed = await client.post(
                "/me/password",
                headers=bearer(this["access_token"]),
                json={"current_password": PASSWORD, "new_password": "a whole new passphrase"},
            )
        assert changed.status_code == 204, changed.text
        assert_refused(await stock(downstream.base, other["access_token"]), 401, "TOKEN_REVOKED")
        assert (await stock(downstream.base, this["access_token"])).status_code == 200


async def test_a_key_rotation_at_the_service_is_picked_up_downstream_with_one_fetch(
    deployment: Deployment,
) -> None:
    port = free_port()
    async with serve("service.asgi:app", deployment.service_env(), deployment.folder, port) as old:
        before = await sign_up_and_log_in(old.base, "dave")
        env = deployment.downstream_env(old.base + JWKS_PATH, AUTH_JWKS_MIN_REFETCH_SECONDS="0")
        downstream_cm = serve(DOWNSTREAM_APP, env, deployment.folder)
        downstream = await downstream_cm.__aenter__()
        first = await stock(downstream.base, before["access_token"])
        fetched = old.requests_for(JWKS_PATH)
    try:
        assert first.status_code == 200
        assert fetched == 1
        # The operator rotates: the service restarts on the same URL with a new key, the old
        # one kept as a previous key; the downstream app keeps running on its cached set.
        deployment.rotate_key()
        async with serve(
            "service.asgi:app", deployment.service_env(), deployment.folder, port
        ) as rotated:
            after = await log_in(rotated.base, "dave")
            assert _kid(after["access_token"]) != _kid(before["access_token"])
            answers = await asyncio.gather(
                *(stock(downstream.base, after["access_token"]) for _ in range(8))
            )
            assert [a.status_code for a in answers] == [200] * 8
            # Eight requests with the unknown kid shared one fetch of the new set...
            assert rotated.requests_for(JWKS_PATH) == 1
            # ...which still holds the previous key: tokens signed before keep working.
            assert (await stock(downstream.base, before["access_token"])).status_code == 200
            assert rotated.requests_for(JWKS_PATH) == 1
    finally:
        await downstream_cm.__aexit__(None, None, None)


async def test_unknown_kids_fetch_the_jwks_at_most_once_per_interval(
    deployment: Deployment,
) -> None:
    async with serve("service.asgi:app", deployment.service_env(), deployment.folder) as service:
        pair = await sign_up_and_log_in(service.base, "erin")
        env = deployment.downstream_env(
            service.base + JWKS_PATH, AUTH_JWKS_MIN_REFETCH_SECONDS="3600"
        )
        async with serve(DOWNSTREAM_APP, env, deployment.folder) as downstream:
            assert (await stock(downstream.base, pair["access_token"])).status_code == 200
            assert service.requests_for(JWKS_PATH) == 1
            # Tokens naming kids the service never had (a forger probing): each is refused
            # (401), and none makes the downstream app fetch the set again within the interval.
            forged = [_foreign_token(kid=f"probe-{n}") for n in range(8)]
            answers = await asyncio.gather(*(stock(downstream.base, t) for t in forged))
            assert {a.status_code for a in answers} == {401}
            assert {a.json()["code"] for a in answers} == {"TOKEN_INVALID"}
            assert service.requests_for(JWKS_PATH) == 1


def _foreign_token(kid: str | None = None) -> str:
    """An access token signed by a key the service never had."""
    key = key_from_pem("ES256", generate_private_key_pem("ES256"))
    settings = TokenSettings(
        key=key, issuer="auth-service", audience="auth-service", access_ttl=900, refresh_ttl=0
    )
    token = encode_token(
        settings,
        subject=str(uuid.uuid4()),
        token_type="access",
        roles=["admin"],
        extra_claims={"sid": str(uuid.uuid4()), "ver": 0, "username": "mallory"},
    ).token
    if kid is None:
        return token
    payload = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(payload, key.signing, algorithm="ES256", headers={"kid": kid})


def _kid(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


async def test_jwks_unreachable_is_a_503_never_an_accepted_token(deployment: Deployment) -> None:
    # Nothing listens at the JWKS URL: the downstream app has no key to verify with.
    nowhere = f"http://127.0.0.1:{free_port()}{JWKS_PATH}"
    env = deployment.downstream_env(nowhere)
    async with serve(DOWNSTREAM_APP, env, deployment.folder) as downstream:
        for _ in range(3):
            response = await stock(downstream.base, _foreign_token())
            assert_refused(response, 503, "SERVICE_UNAVAILABLE")
            assert "Retry-After" in response.headers


async def test_a_service_that_went_away_leaves_new_kids_unverifiable_503(
    deployment: Deployment,
) -> None:
    async with serve("service.asgi:app", deployment.service_env(), deployment.folder) as service:
        pair = await sign_up_and_log_in(service.base, "frank")
        env = deployment.downstream_env(service.base + JWKS_PATH, AUTH_JWKS_MIN_REFETCH_SECONDS="0")
        downstream_cm = serve(DOWNSTREAM_APP, env, deployment.folder)
        downstream = await downstream_cm.__aenter__()
        first = await stock(downstream.base, pair["access_token"])
    try:
        assert first.status_code == 200
        # The service is gone. A token it signed still verifies with the cached key...
        assert (await stock(downstream.base, pair["access_token"])).status_code == 200
        # ...and one naming a kid the downstream app never saw cannot be checked now: 503.
        response = await stock(downstream.base, _foreign_token(kid="rotated-while-away"))
        assert_refused(response, 503, "SERVICE_UNAVAILABLE")
    finally:
        await downstream_cm.__aexit__(None, None, None)


async def test_a_forged_token_with_the_services_kid_is_refused_downstream(
    deployment: Deployment,
) -> None:
    async with service_and_downstream(deployment) as (service, downstream):
        pair = await sign_up_and_log_in(service.base, "grace")
        forged = _foreign_token(kid=_kid(pair["access_token"]))
        assert_refused(await stock(downstream.base, forged), 401, "TOKEN_INVALID")


def service_output(deployment: Deployment, *args: str) -> dict[str, str]:
    result = run_python("-m", "service", *args, cwd=deployment.folder, env=deployment.service_env())
    assert result.returncode == 0, result.stderr
    answer: dict[str, str] = json.loads(result.stdout)
    return answer


async def client_token(service: str, client: dict[str, str], scope: str | None = None) -> str:
    async with httpx.AsyncClient(base_url=service) as http:
        response = await http.post(
            "/token",
            data={"grant_type": "client_credentials", **({"scope": scope} if scope else {})},
            auth=(client["client_id"], client["client_secret"]),
        )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def sync(downstream: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=downstream) as http:
        return await http.post("/stock/sync", headers=bearer(token))


async def test_a_machine_clients_token_passes_scope_required_downstream_until_the_client_is_deleted(
    deployment: Deployment,
) -> None:
    writer = service_output(
        deployment, "clients", "create", "inventory-sync", "--scope", "inventory:write"
    )
    reader = service_output(deployment, "clients", "create", "dashboards", "--scope", "stock:read")
    async with service_and_downstream(deployment) as (service, downstream):
        token = await client_token(service.base, writer)
        response = await sync(downstream.base, token)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "synced_by": writer["client_id"],
            "scopes": ["inventory:write"],
        }
        # The same token on a user's route, and another client's token without the scope.
        assert_refused(await stock(downstream.base, token), 401, "WRONG_TOKEN_TYPE")
        refused = await sync(downstream.base, await client_token(service.base, reader))
        assert_refused(refused, 403, "INSUFFICIENT_SCOPE")
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
        # A user's token carries no scope.
        user = await sign_up_and_log_in(service.base, "heidi")
        assert_refused(await sync(downstream.base, user["access_token"]), 403, "INSUFFICIENT_SCOPE")

        service_command(deployment, "clients", "delete", "inventory-sync")
        assert_refused(await sync(downstream.base, token), 401, "TOKEN_REVOKED")


async def test_a_token_revoked_with_revoke_is_refused_downstream(deployment: Deployment) -> None:
    async with service_and_downstream(deployment) as (service, downstream):
        access = await sign_up_and_log_in(service.base, "ivan")
        by_refresh = await log_in(service.base, "ivan")
        async with httpx.AsyncClient(base_url=service.base) as http:
            assert (
                await http.post("/revoke", data={"token": access["access_token"]})
            ).status_code == 200
            revoked = await http.post("/revoke", data={"token": by_refresh["refresh_token"]})
            assert revoked.status_code == 200
        assert_refused(await stock(downstream.base, access["access_token"]), 401, "TOKEN_REVOKED")
        # Revoking the refresh token ended its session: its access token goes with it.
        ended = await stock(downstream.base, by_refresh["access_token"])
        assert_refused(ended, 401, "TOKEN_REVOKED")


async def test_with_introspection_and_no_redis_a_logout_is_refused_downstream(
    deployment: Deployment,
) -> None:
    introspector = service_output(deployment, "clients", "create", "inventory-introspection")
    async with serve("service.asgi:app", deployment.service_env(), deployment.folder) as service:
        for mode in ("jwks+introspection", "introspection-only"):
            env = deployment.downstream_env(
                service.base + JWKS_PATH,
                AUTH_INTROSPECTION_URL=service.base + "/introspect",
                AUTH_CLIENT_ID=introspector["client_id"],
                AUTH_CLIENT_SECRET=introspector["client_secret"],
            )
            del env["AUTH_REDIS_URL"], env["AUTH_REDIS_PREFIX"]
            if mode == "introspection-only":
                del env["AUTH_JWKS_URL"]
            async with serve(DOWNSTREAM_APP, env, deployment.folder) as downstream:
                pair = await sign_up_and_log_in(service.base, mode.replace("+", "_"))
                response = await stock(downstream.base, pair["access_token"])
                assert response.status_code == 200, (mode, response.text)
                assert response.json()["username"] == mode.replace("+", "_")
                code = "TOKEN_REVOKED" if mode == "jwks+introspection" else "TOKEN_INVALID"
                assert_refused(await stock(downstream.base, "a.b.c"), 401, "TOKEN_INVALID")
                async with httpx.AsyncClient(base_url=service.base) as http:
                    await http.post("/logout", headers=bearer(pair["access_token"]))
                assert_refused(await stock(downstream.base, pair["access_token"]), 401, code)
                refresh = await stock(downstream.base, pair["refresh_token"])
                assert refresh.status_code == 401, (mode, refresh.text)
