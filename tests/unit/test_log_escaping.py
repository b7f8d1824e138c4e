"""Nothing a client sends can forge a log line: control characters are logged as escapes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from service.core import audit
from service.core.logs import escape_controls, escape_log_records
from tests.servers import HYPERCORN, clean_env, free_port, wait_until_up

FORGED = "[2026-01-01 00:00:00 +0000] [1] [INFO] 127.0.0.1:1 - POST /admin/users 200"


@pytest.fixture
def escaping() -> Iterator[None]:
    """The escaping record factory installed, as the app's logging set-up does."""
    previous = logging.getLogRecordFactory()
    escape_log_records()
    yield
    logging.setLogRecordFactory(previous)


@contextmanager
def captured(name: str, fmt: str) -> Iterator[io.StringIO]:
    """What the logger ``name`` writes, through a handler with the format ``fmt``."""
    logger = logging.getLogger(name)
    saved = (logger.handlers, logger.propagate, logger.level)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.handlers, logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


def test_controls_and_line_separators_become_visible_escapes() -> None:
    text = "a\nb\rc\x00d\x1be\x7ff\x85g\x9fh\u2028i\u2029j\tk é\\"

    assert escape_controls(text) == (
        "a\\x0ab\\x0dc\\x00d\\x1be\\x7ff\\x85g\\x9fh\\u2028i\\u2029j\\x09k é\\"
    )


@pytest.mark.usefixtures("escaping")
def test_an_app_log_line_with_a_forged_path_stays_one_line() -> None:
    with captured("service", "[%(levelname)s] %(message)s") as stream:
        logging.getLogger("service").error(
            "unhandled error on %s %s", "GET", f"/x\n{FORGED}\x1b[2J\x00"
        )

    written = stream.getvalue()
    assert written == f"[ERROR] unhandled error on GET /x\\x0a{FORGED}\\x1b[2J\\x00\n"


@pytest.mark.usefixtures("escaping")
def test_a_traceback_keeps_its_lines_but_none_starts_a_record() -> None:
    with captured("service", "[%(levelname)s] %(message)s") as stream:
        try:
            raise ValueError(f"bad path /x\n{FORGED}\x1b")
        except ValueError:
            logging.getLogger("service").exception("unhandled error")

    first, *rest = stream.getvalue().splitlines()
    assert first == "[ERROR] unhandled error"
    assert rest[0] == "  Traceback (most recent call last):"
    assert rest[-2:] == ["  ValueError: bad path /x", f"  {FORGED}\\x1b"]
    assert all(line.startswith("  ") for line in rest)


@pytest.mark.usefixtures("escaping")
def test_audit_lines_are_ascii_json_on_one_line() -> None:
    username = f"eve\n{FORGED}\x1b\x00\x7f\x85\u2028\u2029é"
    with captured("service.audit", "%(message)s") as stream:
        audit.audit("login", outcome="failed", username=username)

    line, end = stream.getvalue().split("\n")
    assert end == ""
    assert line.isascii()
    assert line.isprintable()
    assert json.loads(line)["username"] == username


@pytest.mark.slow
async def test_the_access_log_writes_one_line_with_visible_escapes(tmp_path: Path) -> None:
    access_log = tmp_path / "access.log"
    port = free_port()
    env = clean_env(AUTH_ENV="testing", AUTH_JWT_SECRET="f" * 48)
    server = await asyncio.create_subprocess_exec(
        *HYPERCORN,
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        str(access_log),
        "service.asgi:app",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until_up(f"http://127.0.0.1:{port}", server)
        # A raw socket: no client library normalises or refuses the target.
        target = "/x%0a" + FORGED.replace(" ", "%20") + "%1b%00"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
    finally:
        server.terminate()  # a graceful stop: every access line is written before it exits
        await asyncio.wait_for(server.wait(), timeout=30)

    assert answer.startswith(b"HTTP/1.1 404 ")
    lines = access_log.read_text().splitlines()
    ours = [line for line in lines if "GET /health " not in line]
    assert len(ours) == 1
    assert f"GET /x\\x0a{FORGED}\\x1b\\x00 1.1 404 " in ours[0]
    assert ours[0].isprintable()
