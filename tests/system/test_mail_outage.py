"""Nothing lost: mail triggered while the SMTP server is down, across a restart of the service
(``python -m service.serve`` with two workers, so two senders share the outbox), reaches the
server exactly once when it is back. On SQLite and PostgreSQL.

The service runs tests/mail_app.py (the service with a 0.2 s poll and sub-second retries). The
mail is triggered through the service's own routes (signup, forgotten password) while it runs,
and queued by this process with ``queue_mail`` while it is stopped (another machine's request).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from service.accounts.mail import Mail, MailTemplates, queue_mail
from service.core.config import Settings
from service.store import migrations
from service.store.db import Database
from service.store.models import OutboxMessage
from service.store.unit_of_work import unit_of_work
from tests.mailbox import SMTPServer
from tests.servers import ROOT, clean_env, free_port, wait_until_up

pytestmark = pytest.mark.slow

TEMPLATES = MailTemplates(ROOT / "tests" / "mail_templates")
PASSWORD = "correct horse battery staple"
VERIFY = "Verify your email address"
RESET = "Reset your password"


@asynccontextmanager
async def service(
    settings: Settings, smtp: SMTPServer, folder: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """``python -m service.serve --workers 2 tests.mail_app:app`` mailing to ``smtp``, and a
    client of it; stopped with SIGTERM (the graceful way) at the end of the block."""
    port = free_port()
    env = clean_env(
        AUTH_ENV="testing",
        AUTH_DATABASE_URL=settings.database_url,
        AUTH_JWT_SECRET="m" * 48,
        AUTH_SMTP_URL=smtp.url,
        AUTH_MAIL_FROM="auth@mail.example",
        AUTH_INSTANCE_PATH=str(folder / "instance"),
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.serve",
        "--workers",
        "2",
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        "none",
        "tests.mail_app:app",
        cwd=folder,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until_up(f"http://127.0.0.1:{port}", process)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), timeout=60) == 0


async def queue(database: Database, recipients: list[str]) -> None:
    async with unit_of_work(database, write=True) as uow:
        for to in recipients:
            mail = Mail(to=to, template="test-hello", context={"name": to, "link": f"x:{to}"})
            await queue_mail(uow, mail, templates=TEMPLATES)
        await uow.commit()


async def counts(database: Database) -> tuple[int, int]:
    """(messages failed at least once, messages sent)."""
    async with unit_of_work(database) as uow:
        failed = await uow.session.scalar(
            select(func.count()).where(OutboxMessage.last_error.is_not(None))
        )
        sent = await uow.session.scalar(
            select(func.count()).where(OutboxMessage.sent_at.is_not(None))
        )
    return failed or 0, sent or 0


async def until(database: Database, *, failed: int = 0, sent: int = 0) -> None:
    """Wait (bounded) until the outbox shows at least that many failed and sent messages."""
    async with asyncio.timeout(60):
        while True:
            now_failed, now_sent = await counts(database)
            if now_failed >= failed and now_sent >= sent:
                return
            await asyncio.sleep(0.05)  # another process writes the database: nothing to await


async def trigger(client: httpx.AsyncClient, emails: list[str]) -> None:
    """A signup (its verification mail) and a forgotten password (a reset mail) for each
    address, and a forgotten password for an address without an account (no mail)."""
    for email in emails:
        username = email.partition("@")[0]
        signup = {"username": username, "email": email, "password": PASSWORD}
        assert (await client.post("/signup", json=signup)).status_code == 201
        assert (await client.post("/password/forgot", json={"email": email})).status_code == 202
    unknown = await client.post("/password/forgot", json={"email": "nobody@example.com"})
    assert unknown.status_code == 202


async def test_mail_triggered_during_an_smtp_outage_and_a_restart_is_delivered_exactly_once(
    settings: Settings, tmp_path: Path
) -> None:
    smtp = SMTPServer()
    database = Database(settings)
    during = [f"during{n}@example.com" for n in range(4)]
    between = [f"between{n}@example.com" for n in range(4)]
    expected = Counter(
        [("first@example.com", VERIFY), ("first@example.com", RESET)]
        + [(to, subject) for to in during for subject in (VERIFY, RESET)]
        + [(to, f"Hello {to}") for to in between]
    )
    try:
        if settings.is_sqlite:
            await migrations.upgrade(database)
        async with service(settings, smtp, tmp_path) as client:
            with smtp:
                await trigger(client, ["first@example.com"])
                await smtp.mailbox.wait_for(2)
            # The SMTP server is stopped: the service's connections are refused.
            await trigger(client, during)
            # Both workers' senders tried each message and failed.
            await until(database, failed=2 * len(during))
        # The service is stopped; more mail is queued meanwhile (another machine's request).
        await queue(database, between)
        async with service(settings, smtp, tmp_path):
            with smtp:
                received = await smtp.mailbox.wait_for(expected.total())
                await until(database, sent=expected.total())
                # Every message is marked sent: no sender will take any of them again.
                delivered = smtp.mailbox.received
                data_commands = smtp.mailbox.data_commands
        async with unit_of_work(database) as uow:
            stored = (await uow.session.scalars(select(OutboxMessage))).all()
    finally:
        await database.dispose()

    assert len(received) == expected.total()
    assert Counter((m.recipients[0], m["Subject"]) for m in delivered) == expected
    assert data_commands == expected.total()
    assert {m.sender for m in delivered} == {"auth@mail.example"}
    assert len(stored) == expected.total()
    assert all(m.sent_at is not None and m.claimed_until is None for m in stored)
    assert min(m.attempts for m in stored if m.recipient in during) >= 2
