"""Email verification and password reset through HTTP, with a real SMTP server (aiosmtpd): each
link is read out of the text part of the message the server received, as a person would click
it, on both backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from quart import Quart
from sqlalchemy import select

from service.accounts.email_flows import EmailFlows
from service.accounts.mail import SMTPTransport
from service.core.tokens import SigningKey, TokenSettings, encode_token
from service.store.models import OutboxMessage
from service.store.unit_of_work import unit_of_work
from service.web.state import get_state
from tests.mailbox import Received, SMTPServer
from tests.servers import HANG_GUARD_SECONDS
from tests.support import PASSWORD, Client, SettingsFactory, bearer, running_app

PUBLIC_URL = "https://auth.example.com/accounts"
NEW_PASSWORD = "a brand new passphrase 42"
ALICE = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
# Headers that differ between any two answers, whatever they answer.
PER_REQUEST_HEADERS = {"date", "x-request-id"}


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    with SMTPServer() as server:
        yield server


@pytest.fixture
def mail_settings(smtp: SMTPServer) -> dict[str, Any]:
    return {"smtp_url": smtp.url, "public_url": PUBLIC_URL}


@pytest.fixture
async def app(
    settings_factory: SettingsFactory, mail_settings: dict[str, Any]
) -> AsyncIterator[Quart]:
    async with running_app(settings_factory(**mail_settings)) as application:
        yield application


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


def flows(app: Quart) -> EmailFlows:
    return get_state(app).accounts.email


def link_in(message: Received, path: str) -> str:
    """The one link of the text part that opens ``path``."""
    [link] = [link for link in message.links() if urlsplit(link).path.endswith(path)]
    return link


def token_of(link: str) -> str:
    [token] = parse_qs(urlsplit(link).query)["token"]
    return token


def local(link: str) -> str:
    """The link as the test client requests it: the path under the public URL, and the query."""
    parts = urlsplit(link)
    return f"{parts.path.removeprefix(urlsplit(PUBLIC_URL).path)}?{parts.query}"


async def sign_up(client: Client, **fields: str) -> dict[str, Any]:
    response = await client.post("/signup", json={**ALICE, **fields})
    assert response.status_code == 201, await response.get_data(as_text=True)
    body: dict[str, Any] = await response.get_json()
    return body


async def log_in(client: Client, username: str = "alice", password: str = PASSWORD) -> str:
    response = await client.post("/login", json={"username": username, "password": password})
    assert response.status_code == 200, await response.get_data(as_text=True)
    token: str = (await response.get_json())["access_token"]
    return token


async def mail_to(smtp: SMTPServer, address: str, count: int) -> list[Received]:
    """Wait (bounded) for the ``count``-th message to ``address``; its messages, in order."""
    while True:
        received = smtp.mailbox.received
        mine = [message for message in received if message.recipients == (address,)]
        if len(mine) >= count:
            return mine
        await smtp.mailbox.wait_for(len(received) + 1)


async def outbox_recipients(app: Quart) -> list[str]:
    async with unit_of_work(get_state(app).accounts.database) as uow:
        result = await uow.session.execute(select(OutboxMessage.recipient))
        return list(result.scalars())


async def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, await response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = await response.get_json()
    assert body["code"] == code
    return body


def forged(token: str, flows: EmailFlows, purpose_tokens: TokenSettings) -> str:
    """The same claims signed with another key."""
    claims = jwt.decode(token, options={"verify_signature": False})
    other = replace(purpose_tokens, key=SigningKey.hmac("HS256", b"not the service's key" * 3))
    return encode_token(
        other,
        subject=claims["sub"],
        token_type="access",
        now=flows.clock(),
        ttl=600,
        extra_claims={k: v for k, v in claims.items() if k in ("use", "em", "ev", "ph")},
    ).token


# --- verification -----------------------------------------------------------------------------


async def test_signup_mails_a_link_that_verifies_the_address_once(
    client: Client, smtp: SMTPServer
) -> None:
    user = await sign_up(client)
    assert user["email_verified"] is False

    [message] = await mail_to(smtp, "alice@example.com", 1)
    assert message["Subject"] == "Verify your email address"
    link = link_in(message, "/verify-email")
    assert link.startswith(f"{PUBLIC_URL}/verify-email?token=")
    assert link in message.html

    # Opening the link (as a mail scanner would) changes nothing: it shows a form.
    page = await client.get(local(link))
    assert page.status_code == 200
    assert 'action="/web/verify-email"' in await page.get_data(as_text=True)
    access = await log_in(client)
    assert (await (await client.get("/me", headers=bearer(access))).get_json())[
        "email_verified"
    ] is False

    verified = await client.post("/email/verify", json={"token": token_of(link)})
    assert verified.status_code == 200
    body = await verified.get_json()
    assert body == {**user, "email_verified": True}
    me = await client.get("/me", headers=bearer(access))
    assert (await me.get_json())["email_verified"] is True

    again = await client.post("/email/verify", json={"token": token_of(link)})
    await problem(again, 400, "VERIFICATION_INVALID")


async def test_a_new_verification_link_on_request(
    app: Quart, client: Client, smtp: SMTPServer
) -> None:
    await sign_up(client)
    access = await log_in(client)

    response = await client.post("/email/verify/request", headers=bearer(access))

    assert response.status_code == 202
    assert (await response.get_json())["status"] == "accepted"
    first, second = await mail_to(smtp, "alice@example.com", 2)
    assert token_of(link_in(first, "/verify-email")) != token_of(link_in(second, "/verify-email"))
    verified = await client.post(
        "/email/verify", json={"token": token_of(link_in(second, "/verify-email"))}
    )
    assert verified.status_code == 200
    # Verified: a further request sends nothing.
    assert (await client.post("/email/verify/request", headers=bearer(access))).status_code == 202
    assert [m.recipients for m in smtp.mailbox.received] == [("alice@example.com",)] * 2
    assert (await outbox_recipients(app)).count("alice@example.com") == 2


async def test_an_email_change_unverifies_mails_both_addresses_and_kills_older_links(
    client: Client, smtp: SMTPServer
) -> None:
    await sign_up(client)
    [signup_mail] = await mail_to(smtp, "alice@example.com", 1)
    old_link = link_in(signup_mail, "/verify-email")
    access = await log_in(client)

    changed = await client.patch(
        "/me", json={"email": "Alice.New@Example.com"}, headers=bearer(access)
    )

    assert changed.status_code == 200
    body = await changed.get_json()
    assert (body["email"], body["email_verified"]) == ("alice.new@example.com", False)
    _, notice = await mail_to(smtp, "alice@example.com", 2)
    assert notice["Subject"] == "Your email address was changed"
    assert "alice.new@example.com" in notice.text
    assert not [link for link in notice.links() if "token=" in link]
    [new_mail] = await mail_to(smtp, "alice.new@example.com", 1)
    new_link = link_in(new_mail, "/verify-email")

    refused = await client.post("/email/verify", json={"token": token_of(old_link)})
    await problem(refused, 400, "VERIFICATION_INVALID")
    verified = await client.post("/email/verify", json={"token": token_of(new_link)})
    assert (await verified.get_json())["email_verified"] is True

    # Back to the first address: its old link stays dead (every change bumps the version).
    back = await client.patch("/me", json={"email": "alice@example.com"}, headers=bearer(access))
    assert (await back.get_json())["email_verified"] is False
    still_refused = await client.post("/email/verify", json={"token": token_of(old_link)})
    await problem(still_refused, 400, "VERIFICATION_INVALID")


async def test_a_verification_link_expires(app: Quart, client: Client, smtp: SMTPServer) -> None:
    await sign_up(client)
    [message] = await mail_to(smtp, "alice@example.com", 1)
    settings = get_state(app).settings
    flows(app).clock = lambda: time.time() + settings.verify_token_ttl + settings.jwt_leeway + 1

    response = await client.post(
        "/email/verify", json={"token": token_of(link_in(message, "/verify-email"))}
    )

    await problem(response, 400, "VERIFICATION_INVALID")


# --- password reset ---------------------------------------------------------------------------


async def test_the_reset_flow_sets_the_password_and_ends_every_session(
    client: Client, smtp: SMTPServer
) -> None:
    await sign_up(client)
    old_access = await log_in(client)
    old_refresh = (
        await (
            await client.post("/login", json={"username": "alice", "password": PASSWORD})
        ).get_json()
    )["refresh_token"]

    forgot = await client.post("/password/forgot", json={"email": "Alice@Example.com"})

    assert forgot.status_code == 202
    _, message = await mail_to(smtp, "alice@example.com", 2)
    assert message["Subject"] == "Reset your password"
    link = link_in(message, "/reset-password")
    assert link.startswith(f"{PUBLIC_URL}/reset-password?token=")
    page = await client.get(local(link))
    assert page.status_code == 200
    assert 'action="/web/reset-password"' in await page.get_data(as_text=True)
    # The GET changed nothing: the old password still logs in.
    await log_in(client)

    reset = await client.post(
        "/password/reset", json={"token": token_of(link), "new_password": NEW_PASSWORD}
    )

    assert reset.status_code == 204
    assert await reset.get_data() == b""
    await problem(await client.get("/me", headers=bearer(old_access)), 401, "TOKEN_REVOKED")
    refreshed = await client.post("/refresh", json={"refresh_token": old_refresh})
    await problem(refreshed, 401, "TOKEN_REVOKED")
    wrong = await client.post("/login", json={"username": "alice", "password": PASSWORD})
    await problem(wrong, 401, "INVALID_CREDENTIALS")
    new_access = await log_in(client, password=NEW_PASSWORD)
    me = await (await client.get("/me", headers=bearer(new_access))).get_json()
    assert me["email_verified"] is True  # following the link proved the address

    twice = await client.post(
        "/password/reset", json={"token": token_of(link), "new_password": "yet another passphrase"}
    )
    await problem(twice, 400, "RESET_TOKEN_INVALID")
    await log_in(client, password=NEW_PASSWORD)


async def reset_link(client: Client, smtp: SMTPServer, email: str = "alice@example.com") -> str:
    """Ask for a reset link for ``email`` and wait (bounded) for its message: the link."""

    def resets() -> list[Received]:
        return [
            message
            for message in smtp.mailbox.received
            if message.recipients == (email,) and message["Subject"] == "Reset your password"
        ]

    before = len(resets())
    assert (await client.post("/password/forgot", json={"email": email})).status_code == 202
    while len(resets()) <= before:
        await smtp.mailbox.wait_for(len(smtp.mailbox.received) + 1)
    return link_in(resets()[-1], "/reset-password")


async def test_a_reset_link_expires(app: Quart, client: Client, smtp: SMTPServer) -> None:
    await sign_up(client)
    link = await reset_link(client, smtp)
    settings = get_state(app).settings
    flows(app).clock = lambda: time.time() + settings.reset_token_ttl + settings.jwt_leeway + 1

    response = await client.post(
        "/password/reset", json={"token": token_of(link), "new_password": NEW_PASSWORD}
    )

    await problem(response, 400, "RESET_TOKEN_INVALID")
    await log_in(client)


async def test_a_reset_link_dies_when_the_password_changes_another_way(
    client: Client, smtp: SMTPServer
) -> None:
    await sign_up(client)
    link = await reset_link(client, smtp)
    access = await log_in(client)
    changed = await client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(access),
    )
    assert changed.status_code == 204

    response = await client.post(
        "/password/reset", json={"token": token_of(link), "new_password": "yet another passphrase"}
    )

    await problem(response, 400, "RESET_TOKEN_INVALID")
    await log_in(client, password=NEW_PASSWORD)


async def test_a_reset_link_dies_when_the_address_changes(client: Client, smtp: SMTPServer) -> None:
    await sign_up(client)
    link = await reset_link(client, smtp)
    access = await log_in(client)
    await client.patch("/me", json={"email": "alice@elsewhere.example"}, headers=bearer(access))

    response = await client.post(
        "/password/reset", json={"token": token_of(link), "new_password": NEW_PASSWORD}
    )

    await problem(response, 400, "RESET_TOKEN_INVALID")


async def test_the_password_rules_apply_to_a_reset(client: Client, smtp: SMTPServer) -> None:
    await sign_up(client)
    link = await reset_link(client, smtp)

    common = await client.post(
        "/password/reset", json={"token": token_of(link), "new_password": "password123"}
    )
    short = await client.post(
        "/password/reset", json={"token": token_of(link), "new_password": "x"}
    )

    body = await problem(common, 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["body", "new_password"]
    await problem(short, 422, "VALIDATION_ERROR")
    # The link still works for an acceptable password.
    ok = await client.post(
        "/password/reset", json={"token": token_of(link), "new_password": NEW_PASSWORD}
    )
    assert ok.status_code == 204


async def test_forged_truncated_and_foreign_tokens_are_refused(
    app: Quart, client: Client, smtp: SMTPServer
) -> None:
    await sign_up(client)
    [verify_mail] = await mail_to(smtp, "alice@example.com", 1)
    verify_token = token_of(link_in(verify_mail, "/verify-email"))
    reset_token = token_of(await reset_link(client, smtp))
    access = await log_in(client)
    email = flows(app)

    for token in (
        forged(verify_token, email, email.verify_tokens),
        verify_token[:-6],
        verify_token[: len(verify_token) // 2],
        "not.a.token",
        reset_token,  # a reset link is no verification link
        access,  # nor is an access token
    ):
        response = await client.post("/email/verify", json={"token": token})
        await problem(response, 400, "VERIFICATION_INVALID")
    for token in (
        forged(reset_token, email, email.reset_tokens),
        reset_token[:-6],
        reset_token[: len(reset_token) // 2],
        "x" * 200,
        verify_token,
        access,
    ):
        response = await client.post(
            "/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
        )
        await problem(response, 400, "RESET_TOKEN_INVALID")
    # And no link is an access token.
    for token in (verify_token, reset_token):
        await problem(await client.get("/me", headers=bearer(token)), 401, "TOKEN_INVALID")
    # Both still work.
    assert (await client.post("/email/verify", json={"token": verify_token})).status_code == 200
    reset = await client.post(
        "/password/reset", json={"token": reset_token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 204


async def test_forgot_answers_an_unknown_address_the_same_and_mails_nothing(
    app: Quart, client: Client, smtp: SMTPServer
) -> None:
    await sign_up(client)
    await mail_to(smtp, "alice@example.com", 1)

    unknown = await client.post("/password/forgot", json={"email": "nobody@example.com"})
    known = await client.post("/password/forgot", json={"email": "alice@example.com"})

    assert unknown.status_code == known.status_code == 202
    assert await unknown.get_data() == await known.get_data()

    def comparable(response: Any) -> dict[str, str]:
        return {
            k.lower(): v
            for k, v in response.headers.items()
            if k.lower() not in PER_REQUEST_HEADERS
        }

    assert comparable(unknown) == comparable(known)
    await mail_to(smtp, "alice@example.com", 2)
    assert "nobody@example.com" not in await outbox_recipients(app)
    assert all(m.recipients == ("alice@example.com",) for m in smtp.mailbox.received)


async def test_a_disabled_account_gets_no_reset_link(
    app: Quart, client: Client, smtp: SMTPServer
) -> None:
    await sign_up(client)
    await get_state(app).accounts.set_active("alice", active=False)

    response = await client.post("/password/forgot", json={"email": "alice@example.com"})

    assert response.status_code == 202
    assert (await outbox_recipients(app)) == ["alice@example.com"]  # the signup's mail only


async def test_links_use_the_public_url_whatever_the_host_headers_say(
    client: Client, smtp: SMTPServer
) -> None:
    await sign_up(client)
    hostile = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}

    response = await client.post(
        "/password/forgot", json={"email": "alice@example.com"}, headers=hostile
    )

    assert response.status_code == 202
    _, message = await mail_to(smtp, "alice@example.com", 2)
    assert link_in(message, "/reset-password").startswith(f"{PUBLIC_URL}/reset-password?token=")
    assert "evil.example" not in message.text
    assert "evil.example" not in message.html


async def test_requests_are_answered_while_the_smtp_server_holds_a_message(
    app: Quart, client: Client, smtp: SMTPServer
) -> None:
    transport = get_state(app).accounts.mailer.transport
    assert isinstance(transport, SMTPTransport)
    # The client gives up on no step before the guard below: a request waiting for SMTP hangs.
    transport.timeout = 2 * HANG_GUARD_SECONDS
    release = smtp.mailbox.hold()
    try:
        await sign_up(client)
        # The sender is in the middle of the signup mail's DATA; the server does not answer.
        assert await asyncio.to_thread(smtp.mailbox.holding.wait, HANG_GUARD_SECONDS)

        answers = [
            await asyncio.wait_for(request, HANG_GUARD_SECONDS)
            for request in (
                client.post("/password/forgot", json={"email": "alice@example.com"}),
                client.post("/password/forgot", json={"email": "nobody@example.com"}),
                client.post("/signup", json={**ALICE, "username": "bob", "email": "b@x.io"}),
            )
        ]

        assert [answer.status_code for answer in answers] == [202, 202, 201]
        assert smtp.mailbox.received == []
    finally:
        release.set()
    messages = await smtp.mailbox.wait_for(3)
    assert sorted((m.recipients[0], m["Subject"]) for m in messages) == [
        ("alice@example.com", "Reset your password"),
        ("alice@example.com", "Verify your email address"),
        ("b@x.io", "Verify your email address"),
    ]


# --- throttling -------------------------------------------------------------------------------


async def test_forgot_is_throttled_per_address_typed_alike_for_known_and_unknown(
    client: Client,
) -> None:
    await sign_up(client)
    answers: dict[str, list[int]] = {}
    for email in ("alice@example.com", "nobody@example.com"):
        answers[email] = [
            (await client.post("/password/forgot", json={"email": email})).status_code
            for _ in range(4)
        ]

    assert answers == {
        "alice@example.com": [202, 202, 202, 429],
        "nobody@example.com": [202, 202, 202, 429],
    }
    throttled = await client.post("/password/forgot", json={"email": "nobody@example.com"})
    await problem(throttled, 429, "TOO_MANY_ATTEMPTS")
    assert int(throttled.headers["Retry-After"]) > 0


async def test_forgot_is_throttled_per_client_address(client: Client) -> None:
    statuses = [
        (await client.post("/password/forgot", json={"email": f"user{n}@example.com"})).status_code
        for n in range(21)
    ]

    assert statuses == [202] * 20 + [429]


async def test_verification_requests_are_throttled_per_user(client: Client) -> None:
    await sign_up(client)
    access = await log_in(client)

    statuses = [
        (await client.post("/email/verify/request", headers=bearer(access))).status_code
        for _ in range(4)
    ]

    assert statuses == [202, 202, 202, 429]


async def test_resets_are_throttled_per_client_address(client: Client) -> None:
    statuses = [
        (
            await client.post(
                "/password/reset", json={"token": f"forged{n}", "new_password": NEW_PASSWORD}
            )
        ).status_code
        for n in range(21)
    ]

    assert statuses == [400] * 20 + [429]


# --- settings ---------------------------------------------------------------------------------


@pytest.fixture
def required(mail_settings: dict[str, Any]) -> None:
    mail_settings["require_verified_email"] = True


@pytest.mark.usefixtures("required")
async def test_an_unverified_address_refuses_logins_once_the_password_is_right(
    client: Client, smtp: SMTPServer
) -> None:
    await sign_up(client)
    credentials = {"username": "alice", "password": PASSWORD}
    wrong = {"username": "alice", "password": "not the password"}

    await problem(await client.post("/login", json=wrong), 401, "INVALID_CREDENTIALS")
    await problem(await client.post("/login", json=credentials), 403, "EMAIL_NOT_VERIFIED")
    await problem(
        await client.post("/token", form={**credentials, "grant_type": "password"}),
        403,
        "EMAIL_NOT_VERIFIED",
    )
    await problem(await client.post("/session", json=credentials), 403, "EMAIL_NOT_VERIFIED")
    page = await client.post("/web/login", form=credentials)
    assert page.status_code == 403
    assert "Verify your email address first" in await page.get_data(as_text=True)

    [message] = await mail_to(smtp, "alice@example.com", 1)
    await client.post("/email/verify", json={"token": token_of(link_in(message, "/verify-email"))})
    assert (await client.post("/login", json=credentials)).status_code == 200


@pytest.fixture
def mail_off(mail_settings: dict[str, Any]) -> None:
    mail_settings.update(mail_enabled=False)
    del mail_settings["smtp_url"]


@pytest.mark.usefixtures("mail_off")
async def test_with_mail_turned_off_the_mail_routes_answer_503(app: Quart, client: Client) -> None:
    user = await sign_up(client)
    access = await log_in(client)
    changed = await client.patch("/me", json={"email": "a2@example.com"}, headers=bearer(access))
    assert changed.status_code == 200

    for response in (
        await client.post("/email/verify/request", headers=bearer(access)),
        await client.post("/email/verify", json={"token": "t"}),
        await client.post("/password/forgot", json={"email": "a2@example.com"}),
        await client.post("/password/reset", json={"token": "t", "new_password": NEW_PASSWORD}),
    ):
        await problem(response, 503, "SERVICE_UNAVAILABLE")
    assert user["email_verified"] is False
    assert await outbox_recipients(app) == []


async def test_bad_bodies_are_422(client: Client) -> None:
    for path, body in (
        ("/password/forgot", {"email": "not an address"}),
        ("/password/forgot", {}),
        ("/email/verify", {"token": ""}),
        ("/email/verify", {"token": ["a"]}),
        ("/password/reset", {"token": "t"}),
    ):
        await problem(await client.post(path, json=body), 422, "VALIDATION_ERROR")
