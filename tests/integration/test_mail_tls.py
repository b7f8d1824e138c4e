"""Mail over TLS: STARTTLS whenever the server offers it on ``smtp://``, TLS from the first
byte on ``smtps://``; the certificate is verified (a private CA through ``SSL_CERT_FILE``), and
a certificate that cannot be verified delays the mail rather than sending it in the clear."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from service.accounts.mail import (
    Mail,
    Mailer,
    MailTemplates,
    RetryPolicy,
    SMTPTransport,
    queue_mail,
)
from service.core.config import Settings, parse_smtp_url
from service.store import migrations
from service.store.db import Database
from service.store.models import OutboxMessage
from service.store.unit_of_work import unit_of_work
from tests.mailbox import Certificate, SMTPServer, self_signed_certificate
from tests.support import make_settings

TEMPLATES = MailTemplates(Path(__file__).resolve().parent.parent / "mail_templates")


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return self_signed_certificate(tmp_path / "tls")


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(make_settings(tmp_path))
    try:
        await migrations.upgrade(db)
        async with unit_of_work(db, write=True) as uow:
            mail = Mail(
                to="alice@example.com", template="test-hello", context={"name": "A", "link": "x"}
            )
            await queue_mail(uow, mail, templates=TEMPLATES)
            await uow.commit()
        yield db
    finally:
        await db.dispose()


def sender(database: Database, url: str) -> Mailer:
    settings: Settings = database.settings.model_copy(update={"smtp_url": SecretStr(url)})
    return Mailer(settings, database, retry=RetryPolicy(first=60, cap=60))


async def stored(database: Database) -> OutboxMessage:
    async with unit_of_work(database) as uow:
        return (await uow.session.scalars(select(OutboxMessage))).one()


async def test_starttls_is_used_when_the_server_offers_it(
    database: Database, certificate: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert_file))
    with SMTPServer(starttls=certificate.server_context(), login=True) as smtp:
        assert smtp.url.startswith("smtp://")
        assert await sender(database, smtp.url).deliver_due() == 1
        [received] = await smtp.mailbox.wait_for(1)

    assert received.tls is True
    assert received.login == "mailer"
    assert received["Subject"] == "Hello A"
    assert (await stored(database)).sent_at is not None


async def test_an_untrusted_starttls_certificate_delays_the_mail(
    database: Database, certificate: Certificate
) -> None:
    with SMTPServer(starttls=certificate.server_context()) as smtp:
        assert await sender(database, smtp.url).deliver_due() == 1

    assert smtp.mailbox.received == []
    message = await stored(database)
    assert message.sent_at is None
    assert message.failed_at is None
    assert message.next_attempt_at is not None
    assert message.last_error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in message.last_error


async def test_smtps_is_tls_from_the_first_byte(
    database: Database, certificate: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert_file))
    with SMTPServer(implicit_tls=certificate.server_context()) as smtp:
        assert smtp.url.startswith("smtps://")
        assert await sender(database, smtp.url).deliver_due() == 1
        [received] = await smtp.mailbox.wait_for(1)

    assert received.tls is True
    assert (await stored(database)).sent_at is not None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "smtp://mail.example:587",
            {"hostname": "mail.example", "port": 587, "use_tls": False, "start_tls": None},
        ),
        (
            "smtps://mail.example",
            {"hostname": "mail.example", "port": 465, "use_tls": True, "start_tls": False},
        ),
        (
            "smtp://user%40example.com:p%40ss%3Aword@mail.example",
            {
                "hostname": "mail.example",
                "port": 25,
                "username": "user@example.com",
                "password": "p@ss:word",
            },
        ),
    ],
    ids=["starttls-when-offered", "implicit-tls", "login"],
)
def test_the_url_becomes_the_aiosmtplib_options(url: str, expected: dict[str, object]) -> None:
    transport = SMTPTransport(parse_smtp_url(url), sender="a@example.com", local_hostname="x")

    options = transport.options()

    assert {key: options[key] for key in expected} == expected
    assert options["local_hostname"] == "x"
