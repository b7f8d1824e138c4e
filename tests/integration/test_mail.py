"""Mail: the outbox (queued in the caller's transaction), the message built from templates, and
the sender delivering to a real SMTP server (aiosmtpd) or to ``.eml`` files, with retries.

On SQLite and on PostgreSQL (the ``backend`` fixture). Retry delays are injected (a
``RetryPolicy`` of milliseconds), and every wait is a bounded wait for the mail to arrive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncIterator
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import jinja2
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from service.accounts.mail import (
    FileTransport,
    Mail,
    Mailer,
    MailTemplates,
    RetryPolicy,
    queue_mail,
)
from service.core.config import Settings
from service.store import migrations
from service.store.db import Database
from service.store.models import OutboxMessage
from service.store.unit_of_work import unit_of_work
from tests.mailbox import SMTPServer
from tests.support import SettingsFactory

TEMPLATES = MailTemplates(Path(__file__).resolve().parent.parent / "mail_templates")
HELLO = {"name": "Alice", "link": "http://127.0.0.1:8000/verify-email?token=abc.def"}
QUICK_RETRY = RetryPolicy(first=0.05, cap=0.2)


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    db = Database(settings)
    try:
        if settings.is_sqlite:
            await migrations.upgrade(db)
        yield db
    finally:
        await db.dispose()


def hello(to: str = "alice@example.com", **context: str) -> Mail:
    return Mail(to=to, template="test-hello", context={**HELLO, **context})


async def queue(database: Database, *mails: Mail, commit: bool = True) -> None:
    async with unit_of_work(database, write=True) as uow:
        for mail in mails:
            await queue_mail(uow, mail, templates=TEMPLATES)
        if commit:
            await uow.commit()


async def outbox(database: Database) -> list[OutboxMessage]:
    async with unit_of_work(database) as uow:
        result = await uow.session.execute(select(OutboxMessage).order_by(OutboxMessage.id))
        return list(result.scalars().all())


async def until(condition: Any, seconds: float = 30.0) -> None:
    """Wait (bounded) until the async ``condition()`` is true: it reads the database, which
    has nothing to await on."""
    async with asyncio.timeout(seconds):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def mailer(settings: Settings, database: Database, **options: Any) -> Mailer:
    values: dict[str, Any] = {"retry": QUICK_RETRY, "poll_seconds": 0.1}
    values.update(options)
    return Mailer(settings, database, **values)


# --- queueing -----------------------------------------------------------------------------------


async def test_a_queued_mail_is_kept_only_when_the_caller_commits(database: Database) -> None:
    await queue(database, hello("rolled-back@example.com"), commit=False)
    await queue(database, hello("committed@example.com"))

    [message] = await outbox(database)
    assert message.recipient == "committed@example.com"
    assert message.subject == "Hello Alice"
    assert message.attempts == 0
    assert message.sent_at is None
    assert message.next_attempt_at is not None


async def test_the_message_is_multipart_text_and_html_from_mail_from(
    settings_factory: SettingsFactory, tmp_path: Path
) -> None:
    settings = settings_factory(
        mail_from="Accounts <accounts@mail.example>", public_url="https://auth.example/base"
    )
    database = Database(settings)
    try:
        if settings.is_sqlite:
            await migrations.upgrade(database)
        await queue(database, hello(name="<b>Bob</b> & co"))
        [stored] = await outbox(database)
    finally:
        await database.dispose()

    message = message_from_bytes(stored.message.encode(), policy=default_policy)
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert message["From"] == "Accounts <accounts@mail.example>"
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Hello <b>Bob</b> & co"
    assert message["Date"] is not None
    assert message["Message-ID"].endswith("@auth.example>")
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert text == (
        "Hi <b>Bob</b> & co,\n\nyour link: http://127.0.0.1:8000/verify-email?token=abc.def\n"
    )
    # Autoescaped in HTML only.
    assert html == (
        "<p>Hi &lt;b&gt;Bob&lt;/b&gt; &amp; co,</p>\n"
        '<p><a href="http://127.0.0.1:8000/verify-email?token=abc.def">your link</a></p>\n'
    )


async def test_a_long_link_stays_whole_on_one_line_of_the_raw_message(
    database: Database,
) -> None:
    link = "http://127.0.0.1:8000/reset-password?token=" + "x" * 200
    await queue(database, hello(link=link))

    [stored] = await outbox(database)
    assert f"your link: {link}\n" in stored.message
    assert f'<a href="{link}">' in stored.message


async def test_a_variable_missing_from_the_context_fails_at_queue_time(
    database: Database,
) -> None:
    with pytest.raises(jinja2.UndefinedError, match="'link' is undefined"):
        await queue(
            database, Mail(to="alice@example.com", template="test-hello", context={"name": "A"})
        )

    assert await outbox(database) == []


async def test_a_template_that_does_not_exist_fails_at_queue_time(database: Database) -> None:
    with pytest.raises(jinja2.TemplateNotFound):
        await queue(database, Mail(to="alice@example.com", template="no-such-mail"))


async def test_a_recipient_with_a_line_break_is_refused(database: Database) -> None:
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        await queue(database, hello("alice@example.com\r\nBcc: mallory@example.com"))

    assert await outbox(database) == []


async def test_queue_mail_refuses_when_mail_is_turned_off(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory(mail_enabled=False)
    database = Database(settings)
    try:
        if settings.is_sqlite:
            await migrations.upgrade(database)
        with pytest.raises(RuntimeError, match="AUTH_MAIL_ENABLED=false"):
            await queue(database, hello())
        sender = Mailer.from_settings(settings, database)
        assert sender.enabled is False
        await sender.start()
        await sender.close()
    finally:
        await database.dispose()


# --- SMTP ---------------------------------------------------------------------------------------


async def test_a_committed_mail_reaches_the_smtp_server_once(
    settings_factory: SettingsFactory,
) -> None:
    with SMTPServer() as smtp:
        settings = settings_factory(smtp_url=smtp.url, mail_from="auth@mail.example")
        database = Database(settings)
        sender = mailer(settings, database)
        try:
            if settings.is_sqlite:
                await migrations.upgrade(database)
            await sender.start()
            await queue(database, hello())
            sender.wake()
            [received] = await smtp.mailbox.wait_for(1)
            await until(lambda: _all_sent(database))
            [stored] = await outbox(database)
        finally:
            await sender.close()
            await database.dispose()

    assert received.sender == "auth@mail.example"
    assert received.recipients == ("alice@example.com",)
    assert received["From"] == "auth@mail.example"
    assert received["To"] == "alice@example.com"
    assert received["Subject"] == "Hello Alice"
    assert received.message.get_content_type() == "multipart/alternative"
    assert received.links() == ["http://127.0.0.1:8000/verify-email?token=abc.def"]
    assert '<a href="http://127.0.0.1:8000/verify-email?token=abc.def">' in received.html
    assert received.tls is False
    assert smtp.mailbox.data_commands == 1
    assert stored.attempts == 1
    assert stored.sent_at is not None
    assert stored.next_attempt_at is None
    assert stored.claimed_until is None
    assert stored.message == ""  # the link it held is not kept


async def _all_sent(database: Database) -> bool:
    return all(message.sent_at is not None for message in await outbox(database))


async def test_an_smtp_server_answering_4xx_gets_the_message_once_after_a_retry(
    database: Database, settings: Settings
) -> None:
    with SMTPServer() as smtp:
        smtp.mailbox.answers.extend(["451 4.3.0 Try again later", "421 4.7.0 Busy"])
        sender = mailer(smtp_settings(settings, smtp.url), database)
        await queue(database, hello())
        try:
            await sender.start()
            [received] = await smtp.mailbox.wait_for(1)
            await until(lambda: _all_sent(database))
        finally:
            await sender.close()

    assert received.recipients == ("alice@example.com",)
    assert smtp.mailbox.data_commands == 3
    assert len(smtp.mailbox.received) == 1
    [stored] = await outbox(database)
    assert stored.attempts == 3
    assert stored.last_error is None


async def test_a_refused_recipient_is_recorded_and_not_retried(
    database: Database, settings: Settings
) -> None:
    with SMTPServer() as smtp:
        smtp.mailbox.refused_recipients.add("nobody@example.com")
        sender = mailer(smtp_settings(settings, smtp.url), database)
        await queue(database, hello("nobody@example.com"), hello("alice@example.com"))
        try:
            await sender.start()
            await smtp.mailbox.wait_for(1)
            await until(lambda: _all_done(database))
        finally:
            await sender.close()

    refused, delivered = await outbox(database)
    assert refused.failed_at is not None
    assert refused.sent_at is None
    assert refused.next_attempt_at is None
    assert refused.attempts == 1
    assert refused.last_error == "SMTPRecipientRefused: 550 5.1.1 No such user here"
    assert delivered.sent_at is not None
    assert [m.recipients for m in smtp.mailbox.received] == [("alice@example.com",)]


async def _all_done(database: Database) -> bool:
    return all(message.next_attempt_at is None for message in await outbox(database))


def smtp_settings(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"smtp_url": SecretStr(url)})


async def test_an_smtp_outage_delays_mail_and_loses_none(
    database: Database, settings: Settings
) -> None:
    smtp = SMTPServer()  # not started: connections are refused
    sender = mailer(smtp_settings(settings, smtp.url), database)
    await queue(database, *(hello(f"user{n}@example.com") for n in range(5)))
    try:
        await sender.start()
        await until(lambda: _all_failed_once(database))
        assert {m.sent_at for m in await outbox(database)} == {None}
        with smtp:
            received = await smtp.mailbox.wait_for(5)
            await until(lambda: _all_sent(database))
    finally:
        await sender.close()

    assert sorted(r.recipients[0] for r in received) == [f"user{n}@example.com" for n in range(5)]
    assert smtp.mailbox.data_commands == 5


async def _all_failed_once(database: Database) -> bool:
    return all(message.last_error is not None for message in await outbox(database))


async def test_two_senders_on_one_database_never_deliver_a_message_twice(
    settings_factory: SettingsFactory,
) -> None:
    with SMTPServer() as smtp:
        settings = settings_factory(smtp_url=smtp.url)
        first_db, second_db = Database(settings), Database(settings)
        try:
            if settings.is_sqlite:
                await migrations.upgrade(first_db)
            await queue(first_db, *(hello(f"user{n}@example.com") for n in range(30)))
            senders = [mailer(settings, first_db), mailer(settings, second_db)]
            counts = await asyncio.gather(*(sender.deliver_due() for sender in senders))
            received = await smtp.mailbox.wait_for(30)
            stored = await outbox(first_db)
        finally:
            await first_db.dispose()
            await second_db.dispose()

    assert sum(counts) == 30
    assert sorted(r.recipients[0] for r in received) == sorted(
        f"user{n}@example.com" for n in range(30)
    )
    assert smtp.mailbox.data_commands == 30
    assert {m.attempts for m in stored} == {1}


async def test_a_message_claimed_by_a_sender_that_stopped_is_sent_after_its_lease(
    database: Database, settings: Settings
) -> None:
    with SMTPServer() as smtp:
        configured = smtp_settings(settings, smtp.url)
        await queue(database, hello())
        # A sender that claimed the message and then died before delivering it.
        dead = mailer(configured, database, lease_seconds=0.3)
        claimed = await dead._claim()
        assert claimed is not None
        survivor = mailer(configured, database)
        assert await survivor.deliver_due() == 0  # still held by the dead sender's lease

        await until(lambda: _delivered_by(survivor))
        [received] = await smtp.mailbox.wait_for(1)

    assert received.recipients == ("alice@example.com",)
    assert smtp.mailbox.data_commands == 1
    [stored] = await outbox(database)
    assert stored.attempts == 2


async def _delivered_by(sender: Mailer) -> bool:
    return await sender.deliver_due() == 1


async def test_wake_delivers_without_waiting_for_the_poll(
    database: Database, settings: Settings
) -> None:
    with SMTPServer() as smtp:
        sender = mailer(smtp_settings(settings, smtp.url), database, poll_seconds=3600)
        try:
            await sender.start()
            await queue(database, hello())
            sender.wake()
            await smtp.mailbox.wait_for(1, seconds=30)
        finally:
            await sender.close()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_smtp_login_with_the_url_credentials(database: Database, settings: Settings) -> None:
    with SMTPServer(login=True) as smtp:
        sender = mailer(smtp_settings(settings, smtp.url), database)
        await queue(database, hello())
        assert await sender.deliver_due() == 1
        [received] = await smtp.mailbox.wait_for(1)

    assert received.login == "mailer"


# --- .eml files ---------------------------------------------------------------------------------


async def test_without_smtp_url_each_message_is_an_eml_file_in_the_instance_outbox(
    database: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    sender = Mailer(settings, database)
    assert isinstance(sender.transport, FileTransport)
    await queue(database, hello(), hello("bob@example.com", name="Bob"))

    with caplog.at_level(logging.INFO, logger="service"):
        assert await sender.deliver_due() == 2

    folder = settings.instance_path / "outbox"
    files = sorted(folder.iterdir())
    assert [path.suffix for path in files] == [".eml", ".eml"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(path.stat().st_mode) for path in files} == {0o600}
    messages = [message_from_bytes(path.read_bytes(), policy=default_policy) for path in files]
    assert [m["To"] for m in messages] == ["alice@example.com", "bob@example.com"]
    assert messages[1].get_body(("plain",)).get_content().startswith("Hi Bob,")  # type: ignore[union-attr]
    lines = [r.getMessage() for r in caplog.records if r.name == "service"]
    assert lines == [
        f"mail to alice@example.com written to {files[0]}",
        f"mail to bob@example.com written to {files[1]}",
    ]
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    assert {m.sent_at is not None for m in await outbox(database)} == {True}


async def test_an_outbox_folder_that_cannot_be_written_keeps_the_message_for_later(
    database: Database, settings: Settings
) -> None:
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    (settings.instance_path / "outbox").write_text("a file where the folder should be\n")
    sender = mailer(settings, database)
    await queue(database, hello())

    assert await sender.deliver_due() == 1

    [stored] = await outbox(database)
    assert stored.sent_at is None
    assert stored.failed_at is None
    assert stored.next_attempt_at is not None
    assert stored.last_error is not None
    assert stored.last_error.startswith("FileExistsError")


# --- retry timing -------------------------------------------------------------------------------


def test_the_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(first=5.0, cap=600.0)
    for attempts, ceiling in [(1, 5.0), (2, 10.0), (3, 20.0), (8, 600.0), (40, 600.0)]:
        delays = [policy.delay(attempts) for _ in range(200)]
        assert min(delays) >= ceiling / 2
        assert max(delays) <= ceiling
        assert len(set(delays)) > 1


async def test_a_message_still_undelivered_after_the_give_up_age_is_failed(
    database: Database, settings: Settings
) -> None:
    smtp = SMTPServer()  # never started
    sender = mailer(
        smtp_settings(settings, smtp.url),
        database,
        retry=RetryPolicy(first=0.01, cap=0.01, give_up_after=timedelta(0)),
    )
    await queue(database, hello())

    assert await sender.deliver_due() == 1

    [stored] = await outbox(database)
    assert stored.failed_at is not None
    assert stored.last_error is not None
    assert stored.last_error.startswith(
        f"given up: SMTPConnectError: Error connecting to 127.0.0.1 on port {smtp.port}: "
    )


def test_outbox_file_permissions_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        path = FileTransport(tmp_path / "outbox")._write(_fake_message())
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def _fake_message() -> OutboxMessage:
    from service.store.models import utcnow

    return OutboxMessage(id=1, created_at=utcnow(), recipient="a@example.com", message="x\n")
