"""Mail: messages queued in the outbox in the transaction of the change that causes them, and
a background sender that delivers them (SMTP, or ``.eml`` files in development).

Nothing lost: ``queue_mail`` renders the message and adds it to the ``outbox`` table in the
caller's transaction, so a message exists exactly when the change that caused it was committed,
and no request ever waits for SMTP. Each process runs one ``Mailer`` task, which claims due
messages one at a time with a lease (``OutboxRepository.claim_due``: a conditional UPDATE, so of
several processes and machines exactly one holds a message), delivers it, and marks it sent. A
refused connection, a timeout or an SMTP 4xx answer puts the message back with an exponential,
jittered, capped delay (``RetryPolicy``); a permanent 5xx refusal of the recipient or of the
message is recorded (``failed_at``, ``last_error``) and never tried again, and so is a message
still undelivered after ``RetryPolicy.give_up_after``.

The remaining window is at-least-once, not exactly-once: a process that stops (killed, or
``close`` running out of patience) after the SMTP server accepted a message but before
``mark_sent`` committed leaves the message claimed; once the lease expires another sender (or
the next start) delivers it again. Every other interruption (before the server's final 250)
delays the message and delivers it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import functools
import ipaddress
import logging
import os
import random
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_string
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import aiosmtplib
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from service.core.config import ConfigError, Settings, SMTPServer, parse_smtp_url
from service.store.db import DATABASE_UNAVAILABLE, Database
from service.store.models import OutboxMessage, utcnow
from service.store.unit_of_work import UnitOfWork, unit_of_work

logger = logging.getLogger("service")

TEMPLATE_FOLDER = Path(__file__).resolve().parent / "mail_templates"
OUTBOX_FOLDER_NAME = "outbox"
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True)
class Mail:
    """One message to queue: ``template`` names files in ``service/accounts/mail_templates/``
    (``<template>.subject.txt``, ``<template>.txt``, ``<template>.html``), rendered with
    ``context``."""

    to: str
    template: str
    context: Mapping[str, str] = field(default_factory=dict)


class MailTemplates:
    """The templates of one folder, rendered with Jinja2: HTML escaped, and a variable the
    context lacks is an error when the mail is queued, not a blank in the message."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.environment = Environment(
            loader=FileSystemLoader(folder),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            keep_trailing_newline=True,
            auto_reload=False,
        )

    def render(self, mail: Mail) -> tuple[str, str, str]:
        """``(subject, text, html)``; the subject on one line."""
        context = dict(mail.context)
        subject = self.environment.get_template(f"{mail.template}.subject.txt").render(context)
        text = self.environment.get_template(f"{mail.template}.txt").render(context)
        html = self.environment.get_template(f"{mail.template}.html").render(context)
        return " ".join(subject.split()), text, html


@functools.cache
def templates_in(folder: Path) -> MailTemplates:
    return MailTemplates(folder)


def compose(settings: Settings, mail: Mail, templates: MailTemplates) -> EmailMessage:
    """The multipart/alternative message (text, then HTML) from ``AUTH_MAIL_FROM``."""
    subject, text, html = templates.render(mail)
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = mail.to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=message_domain(settings))
    message.set_content(text, cte=_transfer_encoding(text))
    message.add_alternative(html, subtype="html", cte=_transfer_encoding(html))
    return message


def _transfer_encoding(body: str) -> str | None:
    """``7bit`` for ASCII lines up to SMTP's 998 characters, so that a link stays whole and
    readable in the raw message (an ``.eml`` file); else the email package's choice."""
    if body.isascii() and all(len(line) <= 998 for line in body.splitlines()):
        return "7bit"
    return None


def message_domain(settings: Settings) -> str:
    """The Message-ID's domain: the public URL's host name, else the From address's domain."""
    host = urlsplit(settings.public_url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host:
            return host
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2]
    return domain or "localhost"


async def queue_mail(
    uow: UnitOfWork, mail: Mail, *, templates: MailTemplates | None = None
) -> None:
    """Add ``mail`` to the outbox in ``uow``'s transaction (sent once the caller commits).

    Rendered now: a template or variable missing is an exception here, in the request that
    queues it. ``templates``: another folder's (tests); by default ``TEMPLATE_FOLDER``'s.
    Call ``Mailer.wake()`` after the commit to have it sent at once rather than at the next poll.
    """
    settings = uow.settings
    if not settings.mail_enabled:
        raise RuntimeError("mail is turned off (AUTH_MAIL_ENABLED=false): nothing may be queued")
    message = compose(settings, mail, templates or templates_in(TEMPLATE_FOLDER))
    await uow.outbox.add(
        recipient=mail.to,
        subject=str(message["Subject"]),
        message=message.as_string(policy=email.policy.default),
        now=utcnow(),
    )


# --- delivery -----------------------------------------------------------------------------------


class TransientFailure(Exception):
    """Try again later: the server is away, slow, or answered 4xx."""


class PermanentFailure(Exception):
    """Never try again: the server refused the recipient or the message for good (5xx)."""


class Transport(Protocol):
    async def deliver(self, message: OutboxMessage) -> None:
        """Deliver ``message`` or raise TransientFailure / PermanentFailure."""


def _error_text(error: BaseException) -> str:
    if isinstance(error, aiosmtplib.SMTPResponseException):
        text = f"{type(error).__name__}: {error.code} {error.message}"
    else:
        text = f"{type(error).__name__}: {error}"
    text = text.replace("\r", " ").replace("\n", " ")
    return text[:MAX_ERROR_LENGTH]


class SMTPTransport:
    """aiosmtplib to ``AUTH_SMTP_URL``: ``smtps://`` is TLS from the start, ``smtp://`` upgrades
    with STARTTLS whenever the server offers it. Certificates are verified against the system's
    store (``ssl.create_default_context``: ``SSL_CERT_FILE`` names a private CA)."""

    def __init__(
        self,
        server: SMTPServer,
        *,
        sender: str,
        local_hostname: str,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.server = server
        self.sender = parseaddr(sender)[1] or sender
        self.local_hostname = local_hostname
        self.timeout = timeout
        self._tls_context = tls_context

    @property
    def tls_context(self) -> ssl.SSLContext:
        # Made when first needed: loading the system's certificates costs milliseconds, and an
        # app that sends nothing (most tests) never pays them.
        if self._tls_context is None:
            self._tls_context = ssl.create_default_context()
        return self._tls_context

    def options(self) -> dict[str, object]:
        """The keyword arguments of ``aiosmtplib.send`` for this server."""
        return {
            "hostname": self.server.host,
            "port": self.server.port,
            "username": self.server.username,
            "password": self.server.password,
            "use_tls": self.server.tls,
            # None: STARTTLS if the server offers it; with smtps:// the connection is TLS already.
            "start_tls": False if self.server.tls else None,
            "tls_context": self.tls_context,
            "timeout": self.timeout,
            # Given, so the client never asks the resolver for its own name (socket.getfqdn).
            "local_hostname": self.local_hostname,
        }

    async def deliver(self, message: OutboxMessage) -> None:
        parsed = message_from_string(message.message, policy=email.policy.SMTP)
        try:
            await aiosmtplib.send(
                parsed,
                sender=self.sender,
                recipients=[message.recipient],
                **self.options(),  # type: ignore[arg-type]
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refused.code for refused in error.recipients]
            if codes and all(500 <= code < 600 for code in codes):
                raise PermanentFailure(_error_text(error.recipients[0])) from None
            raise TransientFailure(_error_text(error)) from None
        except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as error:
            if 500 <= error.code < 600:
                raise PermanentFailure(_error_text(error)) from None
            raise TransientFailure(_error_text(error)) from None
        # Anything else, 5xx to our sender or login included, is this side's configuration or
        # the server's state: retried with backoff until an operator fixes it.
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as error:
            raise TransientFailure(_error_text(error)) from None


class FileTransport:
    """Development and testing without ``AUTH_SMTP_URL``: each message becomes an ``.eml`` file
    in ``<instance>/outbox/`` (folder 0700, files 0600, written whole then renamed into place),
    and one line on the ``service`` logger names it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, message: OutboxMessage) -> Path:
        # Named by the message, so a retry after a crash replaces the file instead of adding one.
        return self.folder / f"{message.created_at:%Y%m%dT%H%M%S}-{message.id}.eml"

    async def deliver(self, message: OutboxMessage) -> None:
        try:
            path = await asyncio.to_thread(self._write, message)
        except OSError as error:
            raise TransientFailure(_error_text(error)) from None
        # A warning, so it shows without any logging set up: it is the developer's only way to
        # see that a mail went out.
        logger.warning("mail to %s written to %s", message.recipient, path)

    def _write(self, message: OutboxMessage) -> Path:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.path_for(message)
        staged = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(message.message)
            os.replace(staged, path)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return path


# --- the sender ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Delay before attempt ``n + 1`` after ``n`` failed: ``first * 2 ** (n - 1)``, capped, then
    drawn between half and all of it (jitter: senders that failed together do not retry
    together)."""

    first: float = 5.0
    cap: float = 600.0
    give_up_after: timedelta = timedelta(days=2)

    def delay(self, attempts: int) -> float:
        ceiling = min(self.cap, self.first * 2 ** max(attempts - 1, 0))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (timing jitter, not a secret)


class Mailer:
    """The background sender of one process.

    ``poll_seconds``: how often it looks at the outbox without a ``wake``; ``lease_seconds``:
    how long a claimed message stays another sender's (longer than any one delivery can take:
    the SMTP timeout bounds each step); ``close_seconds``: how long ``close`` lets a delivery in
    progress finish.
    """

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        transport: Transport | None = None,
        retry: RetryPolicy | None = None,
        poll_seconds: float = 5.0,
        lease_seconds: float = 300.0,
        close_seconds: float = 10.0,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self.settings = settings
        self.database = database
        self.transport = transport if transport is not None else default_transport(settings)
        self.retry = retry or RetryPolicy()
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.close_seconds = close_seconds
        self.retention = retention
        self._task: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()
        self._stopping = False
        self._pruned_at: datetime | None = None

    @classmethod
    def from_settings(cls, settings: Settings, database: Database) -> Mailer:
        """ConfigError (one line) for production with mail on and nowhere to send it."""
        if settings.mail_enabled and settings.env == "production" and settings.smtp_url is None:
            raise ConfigError("AUTH_ENV=production needs AUTH_SMTP_URL, or AUTH_MAIL_ENABLED=false")
        return cls(settings, database)

    @property
    def enabled(self) -> bool:
        return self.settings.mail_enabled

    def wake(self) -> None:
        """A message was committed: look at the outbox now rather than at the next poll."""
        self._woken.set()

    async def start(self) -> None:
        """Start delivering (called once the app serves)."""
        if not self.enabled or self._task is not None:
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="auth-service mailer")

    async def close(self) -> None:
        """Stop delivering; what is not sent yet stays in the outbox for the next start.

        A delivery in progress gets ``close_seconds`` to finish; one cut short stays claimed
        until its lease expires, and is then delivered by whichever sender looks first.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._woken.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=self.close_seconds)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stopping:
            # Cleared before looking: a wake() during the delivery below is not lost.
            self._woken.clear()
            try:
                if await self.deliver_due():
                    await self._prune()
                wait = await self._until_next()
            except DATABASE_UNAVAILABLE as error:
                logger.warning("mail: the database is unavailable (%s)", _error_text(error))
                wait = self.poll_seconds
            except Exception:
                logger.exception("mail: the sender failed; it goes on at the next poll")
                wait = self.poll_seconds
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout=wait)

    async def _until_next(self) -> float:
        async with unit_of_work(self.database) as uow:
            next_attempt = await uow.outbox.next_attempt()
        if next_attempt is None:
            return self.poll_seconds
        seconds = (next_attempt - utcnow()).total_seconds()
        return min(self.poll_seconds, max(seconds, 0.0))

    async def deliver_due(self) -> int:
        """Deliver every message due now that no other sender holds; how many were tried."""
        tried = 0
        while not self._stopping:
            claimed = await self._claim()
            if claimed is None:
                break
            await self._deliver(claimed)
            tried += 1
        return tried

    async def _claim(self) -> OutboxMessage | None:
        now = utcnow()
        async with unit_of_work(self.database) as reader:
            if not await reader.outbox.any_due(now):
                return None
        async with unit_of_work(self.database, write=True) as uow:
            claimed = await uow.outbox.claim_due(
                now=now,
                lease_until=now + timedelta(seconds=self.lease_seconds),
                claim=secrets.token_hex(16),
            )
            await uow.commit()
        return claimed

    async def _deliver(self, message: OutboxMessage) -> None:
        assert message.claim is not None
        claim = message.claim
        try:
            await self.transport.deliver(message)
        except PermanentFailure as failure:
            logger.warning(
                "mail %d to %s refused for good: %s", message.id, message.recipient, failure
            )
            await self._settle("failed", message.id, claim, error=str(failure))
        except TransientFailure as failure:
            await self._retry_later(message, claim, str(failure))
        except Exception as error:  # a bug, not the server: kept, retried, and shown
            logger.exception("mail %d: unexpected delivery error", message.id)
            await self._retry_later(message, claim, _error_text(error))
        else:
            await self._settle("sent", message.id, claim)

    async def _retry_later(self, message: OutboxMessage, claim: str, error: str) -> None:
        now = utcnow()
        if now - message.created_at > self.retry.give_up_after:
            logger.warning("mail %d to %s given up: %s", message.id, message.recipient, error)
            await self._settle("failed", message.id, claim, error=f"given up: {error}")
            return
        delay = self.retry.delay(message.attempts)
        logger.warning(
            "mail %d to %s: attempt %d failed, next in %.0f s: %s",
            message.id,
            message.recipient,
            message.attempts,
            delay,
            error,
        )
        await self._settle(
            "retry", message.id, claim, error=error, when=now + timedelta(seconds=delay)
        )

    async def _settle(
        self,
        outcome: str,
        message_id: int,
        claim: str,
        *,
        error: str = "",
        when: datetime | None = None,
    ) -> None:
        # Recorded with a few tries: a message delivered but not marked is delivered again once
        # its lease expires (the at-least-once window, see the module's docstring).
        for pause in (0.0, 0.5, 1.0, 2.0, 4.0):
            await asyncio.sleep(pause)
            try:
                async with unit_of_work(self.database, write=True) as uow:
                    now = utcnow()
                    if outcome == "sent":
                        kept = await uow.outbox.mark_sent(message_id, claim=claim, now=now)
                    elif outcome == "failed":
                        kept = await uow.outbox.mark_failed(
                            message_id, claim=claim, now=now, error=error
                        )
                    else:
                        assert when is not None
                        kept = await uow.outbox.retry_at(
                            message_id, claim=claim, when=when, error=error
                        )
                    await uow.commit()
            except DATABASE_UNAVAILABLE as failure:
                logger.warning(
                    "mail %d: cannot record it as %s (%s)",
                    message_id,
                    outcome,
                    _error_text(failure),
                )
                continue
            if not kept:
                logger.warning("mail %d: its lease ran out before it was %s", message_id, outcome)
            return

    async def _prune(self) -> None:
        """At most hourly, after a delivery (a write anyway): idle senders never write."""
        now = utcnow()
        if self._pruned_at is not None and now - self._pruned_at < timedelta(hours=1):
            return
        async with unit_of_work(self.database, write=True) as uow:
            await uow.outbox.prune(now - self.retention)
            await uow.commit()
        self._pruned_at = now


def default_transport(settings: Settings) -> Transport:
    """SMTP when ``AUTH_SMTP_URL`` is set, else ``.eml`` files in the instance folder."""
    if settings.smtp_url is None:
        return FileTransport(settings.instance_path / OUTBOX_FOLDER_NAME)
    return SMTPTransport(
        parse_smtp_url(settings.smtp_url.get_secret_value()),
        sender=settings.mail_from,
        local_hostname=message_domain(settings),
    )
