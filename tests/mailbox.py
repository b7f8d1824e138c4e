"""A real SMTP server for the tests (aiosmtpd), and the messages it received, parsed.

For every test that reads mail (the flows' tests too)::

    from tests.mailbox import SMTPServer

    async def test_something(tmp_path: Path) -> None:
        with SMTPServer() as smtp:                   # 127.0.0.1 on a free port, in a thread
            settings = make_settings(tmp_path, smtp_url=smtp.url)
            ...                                      # something that queues mail
            [message] = await smtp.mailbox.wait_for(1)
            message["To"], message["Subject"], message.text, message.html, message.links()

``SMTPServer.stop()`` / ``start()`` take the server away and bring it back on the same port (an
outage); ``mailbox.answers`` makes it answer DATA with a given reply (``"451 4.3.0 later"``)
for the next messages; ``mailbox.refused_recipients`` refuses addresses at RCPT with a 550;
``mailbox.hold()`` keeps every DATA unanswered until the event it returns is set (a slow mail
server), and ``mailbox.holding`` is set once one waits. Waiting is bounded (``wait_for`` fails
after its timeout), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import datetime
import email.policy
import ipaddress
import re
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AioSMTP
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.servers import free_port

LINK = re.compile(r"https?://\S+")


@dataclass(frozen=True)
class Received:
    """One message as the server got it: the envelope and the parsed message."""

    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage
    tls: bool
    login: str | None

    def __getitem__(self, header: str) -> str | None:
        value = self.message[header]
        return None if value is None else str(value)

    def part(self, content_type: str) -> str:
        body = self.message.get_body(preferencelist=(content_type.split("/")[1],))
        assert body is not None, self.message
        assert body.get_content_type() == content_type, self.message
        content: str = cast(Any, body).get_content()
        return content

    @property
    def text(self) -> str:
        return self.part("text/plain")

    @property
    def html(self) -> str:
        return self.part("text/html")

    def links(self) -> list[str]:
        """The links of the text part, as a person would copy them."""
        return LINK.findall(self.text)


class Mailbox:
    """The aiosmtpd handler: collects what the server accepted (thread-safe: the server runs in
    a thread of its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        # Replies to DATA for the next messages, in order (then "250 OK" again).
        self.answers: deque[str] = deque()
        self.refused_recipients: set[str] = set()
        self.data_commands = 0
        self._release: threading.Event | None = None
        self.holding = threading.Event()

    def hold(self) -> threading.Event:
        """From now on each DATA waits for the returned event before it is answered."""
        release = threading.Event()
        self._release = release
        return release

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    async def handle_RCPT(
        self,
        server: AioSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.refused_recipients:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: AioSMTP, session: Session, envelope: Envelope) -> str:
        release = self._release
        if release is not None and not release.is_set():
            self.holding.set()
            # In a thread of the server's loop: other connections are served meanwhile.
            await asyncio.get_running_loop().run_in_executor(None, release.wait)
        with self._lock:
            self.data_commands += 1
            if self.answers:
                return self.answers.popleft()
            content = envelope.original_content or b""
            parsed = message_from_bytes(content, policy=email.policy.default)
            login = session.auth_data if isinstance(session.auth_data, str) else None
            self._received.append(
                Received(
                    sender=envelope.mail_from or "",
                    recipients=tuple(envelope.rcpt_tos),
                    message=parsed,
                    # STARTTLS (session.ssl) or TLS from the start (the transport's).
                    tls=session.ssl is not None
                    or (
                        server.transport is not None
                        and server.transport.get_extra_info("ssl_object") is not None
                    ),
                    login=login,
                )
            )
        return "250 Message accepted for delivery"

    async def wait_for(self, count: int, seconds: float = 30.0) -> list[Received]:
        """Wait until at least ``count`` messages arrived; then all of them (AssertionError
        when they do not within ``seconds``)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            received = self.received
            if len(received) >= count:
                return received
            await asyncio.sleep(0.02)
        raise AssertionError(f"{count} messages expected, {len(self.received)} arrived")


def _authenticate(
    server: AioSMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    """Accepts the one account ``mailer`` / ``s3cret pass``."""
    if isinstance(data, LoginPassword) and (data.login, data.password) == (
        b"mailer",
        b"s3cret pass",
    ):
        return AuthResult(success=True, auth_data="mailer")
    return AuthResult(success=False, handled=False)


SMTP_USER = "mailer"
SMTP_PASSWORD = "s3cret pass"


class SMTPServer:
    """aiosmtpd on 127.0.0.1 (a thread of its own), restartable on the same port.

    ``starttls``: a server certificate offered with STARTTLS; ``implicit_tls``: TLS from the
    first byte (smtps). ``login``: AUTH required with ``SMTP_USER`` / ``SMTP_PASSWORD``.
    """

    def __init__(
        self,
        *,
        mailbox: Mailbox | None = None,
        port: int | None = None,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        login: bool = False,
    ) -> None:
        self.mailbox = mailbox or Mailbox()
        self.port = port or free_port()
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.login = login
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        scheme = "smtps" if self.implicit_tls is not None else "smtp"
        credentials = f"{SMTP_USER}:{SMTP_PASSWORD.replace(' ', '%20')}@" if self.login else ""
        return f"{scheme}://{credentials}127.0.0.1:{self.port}"

    def start(self) -> SMTPServer:
        options: dict[str, Any] = {}
        if self.starttls is not None:
            options["tls_context"] = self.starttls
        if self.login:
            # Over STARTTLS the server refuses AUTH before TLS: a login proves the upgrade.
            options.update(
                authenticator=_authenticate,
                auth_require_tls=self.starttls is not None,
                auth_required=True,
            )
        controller = Controller(
            self.mailbox,
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=self.implicit_tls,
            server_hostname="mail.test",
            **options,
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SMTPServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost: ``cert_file`` is its own CA."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def self_signed_certificate(folder: Path) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auth-service test SMTP")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_file, key_file)
