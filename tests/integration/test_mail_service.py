"""Mail in the running service: the sender starts with the app and stops with it; without
AUTH_SMTP_URL development and testing write ``.eml`` files, production refuses to start (one
line) unless mail is turned off; a bad AUTH_SMTP_URL is one line naming the variable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.accounts.mail import FileTransport, Mail, Mailer, MailTemplates, queue_mail
from service.core.config import ConfigError, Settings, load_settings
from service.store.unit_of_work import unit_of_work
from service.web.state import EXTENSION_KEY, AuthState
from tests.servers import clean_env, run_python
from tests.support import make_settings, running_app

TEMPLATES = MailTemplates(Path(__file__).resolve().parent.parent / "mail_templates")


async def test_the_running_app_delivers_a_committed_mail_as_an_eml_file(
    settings: Settings,
) -> None:
    async with running_app(settings) as app:
        state: AuthState = app.extensions[EXTENSION_KEY]
        assert state.local_accounts is not None
        mailer = state.local_accounts.mailer
        assert isinstance(mailer.transport, FileTransport)
        async with unit_of_work(state.local_accounts.database, write=True) as uow:
            mail = Mail(
                to="alice@example.com", template="test-hello", context={"name": "A", "link": "x"}
            )
            await queue_mail(uow, mail, templates=TEMPLATES)
            await uow.commit()
        mailer.wake()
        folder = settings.instance_path / "outbox"
        async with asyncio.timeout(30):
            while not (folder.exists() and list(folder.glob("*.eml"))):  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    [path] = folder.glob("*.eml")
    assert "To: alice@example.com" in path.read_text()


def test_production_without_smtp_url_is_refused_unless_mail_is_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, env="production", jwt_secret="p" * 48)
    database = object()

    with pytest.raises(ConfigError) as refused:
        Mailer.from_settings(settings, database)  # type: ignore[arg-type]

    assert str(refused.value) == (
        "AUTH_ENV=production needs AUTH_SMTP_URL, or AUTH_MAIL_ENABLED=false"
    )
    off = make_settings(tmp_path, env="production", jwt_secret="p" * 48, mail_enabled=False)
    assert Mailer.from_settings(off, database).enabled is False  # type: ignore[arg-type]
    with_smtp = make_settings(
        tmp_path, env="production", jwt_secret="p" * 48, smtp_url="smtps://mail.example"
    )
    assert Mailer.from_settings(with_smtp, database).enabled is True  # type: ignore[arg-type]


def start_app(tmp_path: Path, **variables: str) -> list[str]:
    """``import service.asgi`` (the app built from the environment): its stderr lines."""
    result = run_python("-c", "import service.asgi", cwd=tmp_path, env=clean_env(**variables))
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.splitlines() if result.returncode != 0 else []


@pytest.mark.slow
def test_production_start_without_smtp_url_exits_with_one_line(tmp_path: Path) -> None:
    production = {"AUTH_ENV": "production", "AUTH_JWT_SECRET": "p" * 48}

    assert start_app(tmp_path, **production) == [
        "auth-service: configuration error: "
        "AUTH_ENV=production needs AUTH_SMTP_URL, or AUTH_MAIL_ENABLED=false"
    ]
    assert start_app(tmp_path, **production, AUTH_MAIL_ENABLED="false") == []
    assert start_app(tmp_path, **production, AUTH_SMTP_URL="smtp://127.0.0.1:1") == []


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://mail.example:25", "the scheme must be smtp or smtps"),
        ("smtp://:25", "no host"),
        ("smtp://mail.example:99999", "not a URL with a valid port"),
        ("smtp://mail.example:port", "not a URL with a valid port"),
        ("smtp://mail.example:25/inbox", "no path, query or fragment"),
        ("smtp://:hunter2@mail.example:25", "a password without a user"),
    ],
)
def test_a_bad_smtp_url_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, problem: str
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("AUTH_SMTP_URL", url)

    with pytest.raises(ConfigError) as refused:
        load_settings()

    assert str(refused.value) == (
        f"AUTH_SMTP_URL: Value error, {problem}; use smtp://[user:password@]host:port or "
        "smtps://[user:password@]host:port"
    )
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "kept"),
    [("", None), ("  ", None), (" smtp://u:p@mail.example:587 ", "smtp://u:p@mail.example:587")],
)
def test_an_empty_smtp_url_means_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, kept: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTH_SMTP_URL", url)

    smtp_url = load_settings().smtp_url

    assert (smtp_url.get_secret_value() if smtp_url else None) == kept
