"""Nothing lost: mail queued while the SMTP server is down, across a restart of the service
(``python -m service.serve`` with two workers, so two senders share the outbox), reaches the
server exactly once when it is back. On SQLite and PostgreSQL.

The service runs tests/mail_app.py (the service with a 0.2 s poll and sub-second retries); the
mail is queued by this process with ``queue_mail`` in a unit of work, as a request would.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

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


@asynccontextmanager
async def service(settings: Settings, smtp: SMTPServer, folder: Path) -> AsyncIterator[None]:
    """``python -m service.serve --workers 2 tests.mail_app:app`` mailing to ``smtp``; stopped
    with SIGTERM (the graceful way) at the end of the block."""
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
        yield
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


async def test_mail_queued_during_an_smtp_outage_and_a_restart_is_delivered_exactly_once(
    settings: Settings, tmp_path: Path
) -> None:
    smtp = SMTPServer()  # not started: the service's connections are refused
    database = Database(settings)
    before = [f"before{n}@example.com" for n in range(8)]
    between = [f"between{n}@example.com" for n in range(4)]
    try:
        if settings.is_sqlite:
            await migrations.upgrade(database)
        async with service(settings, smtp, tmp_path):
            await queue(database, before)
            # Both workers' senders tried each message and failed (connection refused).
            await until(database, failed=len(before))
        # The service is stopped; more mail is queued meanwhile (another machine's request).
        await queue(database, between)
        async with service(settings, smtp, tmp_path):
            with smtp:
                received = await smtp.mailbox.wait_for(len(before) + len(between))
                await until(database, sent=len(before) + len(between))
                # Every message is marked sent: no sender will take any of them again.
                delivered = smtp.mailbox.received
                data_commands = smtp.mailbox.data_commands
        async with unit_of_work(database) as uow:
            stored = (await uow.session.scalars(select(OutboxMessage))).all()
    finally:
        await database.dispose()

    assert len(received) == len(before) + len(between)
    assert Counter(m.recipients[0] for m in delivered) == Counter(before + between)
    assert data_commands == len(before) + len(between)
    assert {m["Subject"] for m in delivered} == {f"Hello {to}" for to in before + between}
    assert {m.sender for m in delivered} == {"auth@mail.example"}
    assert all(m.sent_at is not None and m.claimed_until is None for m in stored)
    assert min(m.attempts for m in stored if m.recipient in before) >= 2
