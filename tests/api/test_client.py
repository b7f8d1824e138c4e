"""AuthClient: single-flight refresh against a fake server and against the real service."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from quart import Quart

from service.client import (
    AuthClient,
    LoginFailed,
    NotLoggedIn,
    RefreshUnavailable,
    SessionEnded,
)
from service.core.tokens import decode_token, encode_token
from service.web.app import create_app
from service.web.state import get_state
from tests.support import PASSWORD, make_settings

# --- a fake server: tokens are counters, the refresh takes a while so waiters pile up ----------


def problem(status: int, code: str) -> httpx.Response:
    body = {"type": "about:blank", "title": code, "status": status, "detail": code, "code": code}
    return httpx.Response(
        status, content=json.dumps(body), headers={"Content-Type": "application/problem+json"}
    )


def pair(number: int, expires_in: int = 900) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "access_token": f"access-{number}",
            "refresh_token": f"refresh-{number}",
            "token_type": "Bearer",
            "expires_in": expires_in,
            "refresh_expires_in": 3600,
        },
    )


@dataclass
class FakeServer:
    refresh_delay: float = 0.05
    # When set, a refresh is answered only once this opens (after ``refresh_started``).
    refresh_gate: asyncio.Event | None = None
    number: int = 1
    live_access: str | None = "access-1"
    refresh_answers: list[httpx.Response] | None = None  # given in order before the real ones
    protected_answer: httpx.Response | None = None

    def __post_init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.presented_refresh_tokens: list[str] = []
        self.seen: list[httpx.Request] = []
        self.refresh_started = asyncio.Event()

    def expire(self) -> None:
        self.live_access = None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls[path] += 1
        self.seen.append(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if path == "/login":
            body = json.loads(request.content)
            if body["password"] != PASSWORD:
                return problem(401, "INVALID_CREDENTIALS")
            self.number += 1
            self.live_access = f"access-{self.number}"
            return pair(self.number)
        if path == "/refresh":
            return await self._refresh(token)
        if self.protected_answer is not None:
            return self.protected_answer
        if token != self.live_access:
            return problem(401, "TOKEN_EXPIRED")
        return httpx.Response(200, json={"token": token})

    async def _refresh(self, token: str) -> httpx.Response:
        self.refresh_started.set()
        if self.refresh_gate is not None:
            await self.refresh_gate.wait()
        else:
            await asyncio.sleep(self.refresh_delay)
        if self.refresh_answers:
            return self.refresh_answers.pop(0)
        if token in self.presented_refresh_tokens:
            return problem(401, "TOKEN_REUSED")  # what the real server does after its grace
        self.presented_refresh_tokens.append(token)
        if token != f"refresh-{self.number}":
            return problem(401, "TOKEN_INVALID")
        self.number += 1
        self.live_access = f"access-{self.number}"
        return pair(self.number)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
async def api(server: FakeServer) -> AsyncIterator[AuthClient]:
    transport = httpx.MockTransport(server.handle)
    async with AuthClient("http://auth.test", transport=transport, refresh_margin=None) as client:
        await client.login("alice", PASSWORD)
        yield client


async def test_many_waiters_share_one_refresh(api: AuthClient, server: FakeServer) -> None:
    server.expire()

    responses = await asyncio.gather(*(api.get("/protected") for _ in range(100)))

    assert [r.status_code for r in responses] == [200] * 100
    assert {r.json()["token"] for r in responses} == {"access-3"}
    assert server.calls["/refresh"] == 1
    assert server.presented_refresh_tokens == ["refresh-2"]
    assert server.calls["/protected"] == 200  # each: the expired try, then one retry
    assert api.refresh_token == "refresh-3"


async def test_requests_after_the_refresh_use_the_new_token_without_refreshing(
    api: AuthClient, server: FakeServer
) -> None:
    server.expire()
    await asyncio.gather(*(api.get("/protected") for _ in range(10)))

    later = await asyncio.gather(*(api.get("/protected") for _ in range(10)))

    assert all(r.status_code == 200 for r in later)
    assert server.calls["/refresh"] == 1
    assert server.calls["/protected"] == 30


async def test_a_second_401_after_the_refresh_is_handed_back(
    api: AuthClient, server: FakeServer
) -> None:
    server.protected_answer = problem(401, "TOKEN_EXPIRED")

    response = await api.get("/protected")

    assert response.status_code == 401
    assert response.json()["code"] == "TOKEN_EXPIRED"
    assert server.calls["/refresh"] == 1
    assert server.calls["/protected"] == 2


@pytest.mark.parametrize("code", ["TOKEN_REVOKED", "ACCOUNT_DISABLED", "TOKEN_INVALID"])
async def test_other_401s_are_handed_back_without_a_refresh(
    api: AuthClient, server: FakeServer, code: str
) -> None:
    server.protected_answer = problem(401, code)

    response = await api.get("/protected")

    assert response.json()["code"] == code
    assert server.calls["/refresh"] == 0


@pytest.mark.parametrize("code", ["TOKEN_REUSED", "TOKEN_REVOKED", "TOKEN_EXPIRED"])
async def test_a_refused_refresh_ends_the_session_for_every_waiter(
    api: AuthClient, server: FakeServer, code: str
) -> None:
    server.refresh_answers = [problem(401, code)]
    server.expire()

    results = await asyncio.gather(
        *(api.get("/protected") for _ in range(20)), return_exceptions=True
    )

    assert all(isinstance(result, SessionEnded) for result in results)
    first = results[0]
    assert isinstance(first, SessionEnded)
    assert (first.status, first.code) == (401, code)
    assert code in str(first)
    assert server.calls["/refresh"] == 1
    assert api.access_token is None
    with pytest.raises(SessionEnded, match=code):
        await api.get("/protected")
    assert server.calls["/refresh"] == 1  # the spent token is never shown again


async def test_logging_in_again_after_the_session_ended(
    api: AuthClient, server: FakeServer
) -> None:
    server.refresh_answers = [problem(401, "TOKEN_REVOKED")]
    server.expire()
    with pytest.raises(SessionEnded):
        await api.get("/protected")

    await api.login("alice", PASSWORD)

    assert (await api.get("/protected")).status_code == 200


async def test_a_refresh_without_an_answer_keeps_the_session(
    api: AuthClient, server: FakeServer
) -> None:
    server.refresh_answers = [problem(503, "SERVICE_UNAVAILABLE")]
    server.expire()

    failed = await asyncio.gather(
        *(api.get("/protected") for _ in range(10)), return_exceptions=True
    )
    retried = await api.get("/protected")

    assert all(isinstance(result, RefreshUnavailable) for result in failed)
    assert retried.status_code == 200
    assert server.calls["/refresh"] == 2
    assert server.presented_refresh_tokens == ["refresh-2"]  # the 503 did not spend it


async def test_a_network_error_during_the_refresh_is_refresh_unavailable() -> None:
    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/refresh":
            raise httpx.ConnectError("connection refused", request=request)
        return problem(401, "TOKEN_EXPIRED")

    async with AuthClient("http://auth.test", transport=httpx.MockTransport(handle)) as api:
        api.set_tokens("access", "refresh", expires_in=900)

        with pytest.raises(RefreshUnavailable, match="no answer"):
            await api.get("/protected")

        assert api.refresh_token == "refresh"


async def test_a_waiter_that_gives_up_does_not_cancel_the_refresh(
    api: AuthClient, server: FakeServer
) -> None:
    server.expire()
    server.refresh_gate = asyncio.Event()
    impatient = asyncio.ensure_future(api.get("/protected"))
    patient = asyncio.ensure_future(api.get("/protected"))
    await server.refresh_started.wait()  # the refresh is in flight, held at the server

    impatient.cancel()
    server.refresh_gate.set()
    response = await patient

    assert response.status_code == 200
    assert impatient.cancelled()
    assert server.calls["/refresh"] == 1


async def test_a_login_during_a_refresh_wins(api: AuthClient, server: FakeServer) -> None:
    server.expire()
    server.refresh_gate = asyncio.Event()
    waiting = asyncio.ensure_future(api.get("/protected"))
    await server.refresh_started.wait()  # the refresh is in flight, held at the server

    await api.login("alice", PASSWORD)  # access-3; the refresh of refresh-2 is then refused
    server.refresh_gate.set()
    response = await waiting

    assert response.json() == {"token": "access-3"}
    assert api.refresh_token == "refresh-3"
    assert server.calls["/refresh"] == 1


async def test_the_client_refreshes_before_the_token_runs_out(server: FakeServer) -> None:
    clock = FakeClock()
    transport = httpx.MockTransport(server.handle)
    async with AuthClient("http://auth.test", transport=transport, clock=clock) as api:
        await api.login("alice", PASSWORD)

        clock.now += 869  # 31 s left: outside the 30 s margin
        early = await api.get("/protected")
        clock.now += 2  # 29 s left
        server.expire()  # the server would refuse it anyway from now on
        proactive = await asyncio.gather(*(api.get("/protected") for _ in range(50)))

    assert early.json() == {"token": "access-2"}
    assert {r.json()["token"] for r in proactive} == {"access-3"}
    assert server.calls["/refresh"] == 1
    assert server.calls["/protected"] == 51  # no request went out with the old token


async def test_the_margin_is_at_most_a_tenth_of_the_lifetime(server: FakeServer) -> None:
    clock = FakeClock()
    transport = httpx.MockTransport(server.handle)
    async with AuthClient("http://auth.test", transport=transport, clock=clock) as api:
        api.set_tokens("access-1", "refresh-1", expires_in=10)

        clock.now += 8.9
        await api.get("/protected")
        clock.now += 0.2
        await api.get("/protected")

    assert server.calls["/refresh"] == 1


async def test_a_proactive_refresh_without_an_answer_uses_the_still_valid_token(
    server: FakeServer,
) -> None:
    clock = FakeClock()
    server.refresh_answers = [problem(429, "TOO_MANY_ATTEMPTS")]
    transport = httpx.MockTransport(server.handle)
    async with AuthClient("http://auth.test", transport=transport, clock=clock) as api:
        await api.login("alice", PASSWORD)
        clock.now += 880

        response = await api.get("/protected")

    assert response.json() == {"token": "access-2"}
    assert server.calls["/refresh"] == 1


async def test_the_bearer_token_goes_with_the_callers_headers_and_body(
    api: AuthClient, server: FakeServer
) -> None:
    await api.post("/protected", json={"a": 1}, headers={"X-Request-ID": "abc"})

    sent = server.seen[-1]
    assert sent.headers["Authorization"] == "Bearer access-2"
    assert sent.headers["X-Request-ID"] == "abc"
    assert json.loads(sent.content) == {"a": 1}


async def test_a_refused_login_raises_login_failed(server: FakeServer) -> None:
    async with AuthClient("http://auth.test", transport=httpx.MockTransport(server.handle)) as api:
        with pytest.raises(LoginFailed) as refused:
            await api.login("alice", "wrong password")

    assert (refused.value.status, refused.value.code) == (401, "INVALID_CREDENTIALS")


async def test_requests_before_login_raise_not_logged_in(server: FakeServer) -> None:
    async with AuthClient("http://auth.test", transport=httpx.MockTransport(server.handle)) as api:
        with pytest.raises(NotLoggedIn):
            await api.get("/protected")

    assert server.calls == Counter()


async def test_logout_forgets_the_tokens(api: AuthClient, server: FakeServer) -> None:
    await api.logout()

    assert server.calls["/logout"] == 1
    assert api.access_token is None
    with pytest.raises(NotLoggedIn):
        await api.get("/protected")


# --- the real service, in process --------------------------------------------------------------


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts requests by method and path, and answers by path and status."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: Counter[tuple[str, str]] = Counter()
        self.answers: Counter[tuple[str, int]] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests[(request.method, request.url.path)] += 1
        response = await self.inner.handle_async_request(request)
        self.answers[(request.url.path, response.status_code)] += 1
        return response


@dataclass
class Live:
    app: Quart
    transport: CountingTransport
    api: AuthClient


async def start(tmp_path: Path, **settings: Any) -> tuple[Quart, CountingTransport]:
    app = create_app(make_settings(tmp_path, **settings))
    # Quart's ASGI signature names its event types; httpx's is the generic one.
    transport = CountingTransport(httpx.ASGITransport(app=cast(Any, app)))
    return app, transport


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    app, transport = await start(tmp_path)
    async with app.test_app():
        signup = await app.test_client().post(
            "/signup", json={"username": "alice", "email": "a@example.com", "password": PASSWORD}
        )
        assert signup.status_code == 201
        async with AuthClient("http://auth.test", transport=transport) as api:
            await api.login("alice", PASSWORD)
            yield Live(app, transport, api)


def expired_copy(app: Quart, access_token: str) -> str:
    """The same session's access token, expired an hour ago (signed with the app's key)."""
    tokens = get_state(app).accounts.tokens
    claims = decode_token(tokens, access_token, expected_type="access")
    session = {name: claims.raw[name] for name in ("sid", "ver")}
    past = int(time.time()) - 3600
    return encode_token(
        tokens,
        subject=claims.subject,
        token_type="access",
        now=past - 900,
        fresh=True,
        roles=claims.roles,
        extra_claims=session,
        expires_at=past,
    ).token


async def assert_session_alive(live: Live) -> None:
    sessions = await live.api.get("/sessions")
    assert sessions.status_code == 200
    [session] = sessions.json()
    assert session["current"] is True
    assert (await live.api.get("/me")).json()["username"] == "alice"


@pytest.mark.parametrize("client_knows", [False, True], ids=["server-says-401", "proactive"])
async def test_200_concurrent_requests_across_an_expiry_make_one_refresh(
    live: Live, client_knows: bool
) -> None:
    api = live.api
    assert api.access_token is not None
    assert api.refresh_token is not None
    # The server will refuse the access token as expired; the client may or may not know it.
    api.set_tokens(
        expired_copy(live.app, api.access_token),
        api.refresh_token,
        expires_in=0 if client_knows else 900,
    )

    responses = await asyncio.gather(*(api.get("/protected") for _ in range(200)))

    assert [r.status_code for r in responses] == [200] * 200
    assert {r.json()["username"] for r in responses} == {"alice"}
    assert live.transport.requests[("POST", "/refresh")] == 1
    assert live.transport.answers[("/refresh", 200)] == 1
    expired_answers = live.transport.answers[("/protected", 401)]
    assert expired_answers == (0 if client_knows else 200)
    await assert_session_alive(live)


async def test_after_a_refused_refresh_the_client_raises_session_ended(live: Live) -> None:
    api = live.api
    assert api.access_token is not None
    assert api.refresh_token is not None
    logout = await live.app.test_client().post(
        "/logout/all", headers={"Authorization": f"Bearer {api.access_token}"}
    )
    assert logout.status_code == 204
    api.set_tokens(expired_copy(live.app, api.access_token), api.refresh_token, expires_in=900)

    results = await asyncio.gather(
        *(api.get("/protected") for _ in range(20)), return_exceptions=True
    )

    assert all(isinstance(result, SessionEnded) for result in results)
    assert {result.code for result in results if isinstance(result, SessionEnded)} == {
        "TOKEN_REVOKED"
    }
    assert live.transport.requests[("POST", "/refresh")] == 1


async def test_a_real_expiry_without_leeway(tmp_path: Path) -> None:
    """The client's own clock against the server's: access tokens of 1 s, no leeway."""
    app, transport = await start(tmp_path, access_token_ttl=1, jwt_leeway=0)
    async with app.test_app():
        await app.test_client().post(
            "/signup", json={"username": "alice", "email": "a@example.com", "password": PASSWORD}
        )
        async with AuthClient("http://auth.test", transport=transport) as api:
            # Log in just after a second starts: `iat` is whole seconds, so the token then lives
            # ~0.95 s on the server and 1 s on the client.
            await asyncio.sleep(1.02 - time.time() % 1)
            await api.login("alice", PASSWORD)
            first_token = api.access_token
            fresh = await api.get("/protected")
            # On a busy machine the token may already have needed a refresh: count from here.
            refreshes_before = transport.requests[("POST", "/refresh")]
            await asyncio.sleep(1.1)

            responses = await asyncio.gather(*(api.get("/protected") for _ in range(20)))
            first_again = await app.test_client().get(
                "/protected", headers={"Authorization": f"Bearer {first_token}"}
            )

    assert fresh.status_code == 200
    assert (await first_again.get_json())["code"] == "TOKEN_EXPIRED"
    assert [r.status_code for r in responses] == [200] * 20
    assert transport.requests[("POST", "/refresh")] - refreshes_before == 1
