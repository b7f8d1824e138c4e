"""The audit events' counters, the JSON log lines, and the supervisor's metrics directory."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from service.core.audit import audit, bind_request
from service.core.logs import APP_LOGGER, JsonFormatter, StderrHandler, configure_logging
from service.core.metrics import MULTIPROCESS_DIRECTORY
from service.ops.serve import access_fields, metrics_directory, say


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("outcome", "reason", "counted"),
    [
        ("ok", None, "success"),
        ("failed", "wrong-password", "invalid_credentials"),
        ("failed", "unknown-user", "invalid_credentials"),
        ("failed", "disabled", "account_disabled"),
        ("refused", "email-not-verified", "email_not_verified"),
        ("throttled", None, "throttled"),
        ("mfa-required", None, "mfa_required"),
        ("failed", "a reason nobody named", "other"),
    ],
)
def test_each_login_outcome_has_its_label(outcome: str, reason: str | None, counted: str) -> None:
    before = count("auth_logins_total", outcome=counted)

    audit("login", outcome=outcome, reason=reason)

    assert count("auth_logins_total", outcome=counted) == before + 1


def test_a_login_and_a_refresh_issue_a_pair_and_a_client_token_one_token() -> None:
    kinds = ("access", "refresh", "client_credentials")
    before = {kind: count("auth_tokens_issued_total", type=kind) for kind in kinds}

    audit("login")
    audit("refresh")
    audit("client-token", client_id="c")
    audit("refresh", outcome="refused")

    after = {kind: count("auth_tokens_issued_total", type=kind) for kind in kinds}
    assert {kind: after[kind] - before[kind] for kind in kinds} == {
        "access": 2,
        "refresh": 2,
        "client_credentials": 1,
    }


def test_reuse_and_throttling_are_counted() -> None:
    reuse = count("auth_refresh_reuse_total")
    throttled = count("auth_throttled_total", event="refresh")

    audit("refresh", outcome="reuse-detected")
    audit("refresh", outcome="throttled")

    assert count("auth_refresh_reuse_total") == reuse + 1
    assert count("auth_throttled_total", event="refresh") == throttled + 1


def record(message: str, **extra: object) -> logging.LogRecord:
    """A record made directly, not through the process's record factory: the app installs an
    escaping one (service/core/logs.py) for every later record once any test built an app, and
    this tests the formatter alone."""
    made = logging.LogRecord("service.test", logging.WARNING, __file__, 1, message, (), None)
    made.__dict__.update(extra)
    return made


def test_a_json_line_carries_the_request_id_and_the_records_fields() -> None:
    bind_request(ip="127.0.0.1", request_id="req-1")

    line = JsonFormatter().format(record("hello\nworld", fields={"status": 200}))

    entry = json.loads(line)
    assert "\n" not in line
    assert {k: entry[k] for k in ("level", "logger", "message", "request_id", "status")} == {
        "level": "WARNING",
        "logger": "service.test",
        "message": "hello\nworld",
        "request_id": "req-1",
        "status": 200,
    }
    assert entry["pid"] == os.getpid()


def test_a_traceback_stays_inside_its_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )

    line = JsonFormatter().format(made)

    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exc_info"]


@pytest.fixture
def app_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger(APP_LOGGER)
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_json_format_adds_one_handler_that_leaves_audit_lines_to_their_own(
    app_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json")
    configure_logging("json")

    logging.getLogger("service.accounts").info("one line")
    logging.getLogger("service.audit").info('{"event": "x"}')

    assert sum(isinstance(h, StderrHandler) for h in app_logger.handlers) == 1
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["one line"]


def test_text_format_adds_nothing(app_logger: logging.Logger) -> None:
    before = list(app_logger.handlers)

    configure_logging("text")

    assert app_logger.handlers == before


def test_the_access_fields_leave_the_query_string_out() -> None:
    request = {
        "type": "http",
        "method": "GET",
        "path": "/reset-password",
        "query_string": b"token=secret-link-token",
        "http_version": "1.1",
        "client": ("127.0.0.1", 5000),
    }
    response = {"status": 200, "headers": [(b"x-request-id", b"abc"), (b"content-length", b"12")]}

    fields = access_fields(request, response, 0.0015)  # type: ignore[arg-type]

    assert fields == {
        "remote_addr": "127.0.0.1",
        "method": "GET",
        "path": "/reset-password",
        "protocol": "1.1",
        "status": 200,
        "bytes": 12,
        "duration_us": 1500,
        "request_id": "abc",
    }


def test_the_supervisor_says_its_lines_in_json_too(capsys: pytest.CaptureFixture[str]) -> None:
    say("serving on http://x with 2 workers", json_lines=True)
    say("cannot listen", json_lines=False)

    first, second = capsys.readouterr().err.splitlines()
    assert json.loads(first)["message"] == "serving on http://x with 2 workers"
    assert json.loads(first)["logger"] == "service.serve"
    assert second == "auth-service: cannot listen"


def test_the_metrics_directory_is_private_named_to_the_workers_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MULTIPROCESS_DIRECTORY, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)

    with metrics_directory() as path:
        assert os.environ[MULTIPROCESS_DIRECTORY] == path
        assert Path(path).parent == tmp_path
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o700
        (Path(path) / "counter_1.db").write_bytes(b"")

    assert MULTIPROCESS_DIRECTORY not in os.environ
    assert list(tmp_path.iterdir()) == []


def test_an_operators_metrics_directory_holds_the_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROCESS_DIRECTORY, str(tmp_path))

    with metrics_directory() as path:
        assert Path(path).parent == tmp_path

    assert os.environ[MULTIPROCESS_DIRECTORY] == str(tmp_path)
    assert list(tmp_path.iterdir()) == []
