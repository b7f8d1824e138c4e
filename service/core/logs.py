"""Log lines nobody can forge: control characters in every log record are written as escapes.

A request path is percent-decoded before anyone logs it (hypercorn's access log ``%(r)s``, the
app's "unhandled error on %s %s"), so ``GET /x%0a[...] POST /admin/users 200`` would otherwise
write a second, forged line, and ESC or NUL would reach the terminal raw. Every C0 control, DEL,
C1 control and the Unicode separators U+2028/U+2029 is written as a visible ``\\xNN`` /
``\\uNNNN``, so nothing is lost. A traceback keeps its lines, each indented, so a line that
starts in the first column always starts a record.

The escaping happens where records are made (``logging.setLogRecordFactory``), not in a
formatter: hypercorn replaces the handlers of its loggers when it builds its ``Logger`` (before
or after the app is imported, depending on how it is run), and its ``logger_class`` cannot be
named in hypercorn.toml (``Config.from_toml`` keeps the string, which is not callable). A record
factory covers every logger and handler of the process, whichever server runs the app.

``AUTH_LOG_FORMAT=json`` (``configure_logging``): the application's log (logger ``service``) is
one JSON object per line on stderr (``JsonFormatter``: ``ts``, ``level``, ``logger``,
``message``, ``request_id``, ``pid``, and ``exc_info`` for a traceback, still one line). The
audit log is JSON lines in either format (``core/audit.py``). The access and error logs of
``python -m service.serve`` use the same formatter (``service/ops/serve.py``); under plain
``hypercorn -c hypercorn.toml`` (which can name no logger class) a filter on hypercorn's two loggers
gives their handlers that formatter and turns each access line's atoms into the same fields
(``ServerLinesAsJson``), whether hypercorn built its handlers before the app or after.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from service.core.audit import AUDIT_LOGGER, current_request_id

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
TRACEBACK_INDENT = "  "
ACCESS_LOGGER = "hypercorn.access"
ERROR_LOGGER = "hypercorn.error"


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character and line separator as a visible escape."""
    return _CONTROL.sub(_escape, text)


def escape_record(record: logging.LogRecord) -> None:
    """Render the record's message and traceback now, escaped (in place)."""
    try:
        message = record.getMessage()
    except Exception:  # a wrong format: logging reports it when a handler formats the record
        return
    # Frozen as rendered, so what is written is exactly what was checked.
    record.msg = escape_controls(message)
    record.args = ()
    exc_info = record.exc_info
    if isinstance(exc_info, tuple) and exc_info[0] is not None and not record.exc_text:
        lines = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
        record.exc_text = "\n".join(
            TRACEBACK_INDENT + escape_controls(line) for line in lines.split("\n")
        )


class EscapingRecordFactory:
    """Wraps the process's log record factory; every record it makes is escaped."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.wrapped(*args, **kwargs)
        if record.name == ACCESS_LOGGER and isinstance(record.args, Mapping):
            # hypercorn's access atoms, kept for ServerLinesAsJson (escaping drops the args).
            record.access_atoms = record.args
        escape_record(record)
        return record


def escape_log_records() -> None:
    """Install the escaping record factory for the whole process (once)."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, EscapingRecordFactory):
        logging.setLogRecordFactory(EscapingRecordFactory(current))


APP_LOGGER = "service"


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON; a record's ``fields`` (``extra={"fields": {...}}``) are
    added to it, over the defaults (the access log's ``request_id``, say)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": current_request_id(),
            "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # ensure_ascii: controls and line separators are escapes, so the line stays one line.
        return json.dumps(entry, default=str, ensure_ascii=True)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (a test's capture, say), not
    to the stream of the moment the handler was made."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _stream: IO[str]) -> None:
        pass


def _not_audit(record: logging.LogRecord) -> bool:
    # The audit logger has its own handler (its lines are JSON already).
    return not record.name.startswith(AUDIT_LOGGER)


def _number(text: object) -> int | None:
    return int(text) if isinstance(text, str) and text.isdigit() else None


def fields_of_atoms(atoms: Mapping[str, Any]) -> dict[str, Any]:
    """An access line's fields (those of ``service.serve``'s access log) from hypercorn's
    access atoms. No query string: a link's token travels there."""
    address = atoms["h"]
    request_id = atoms["{x-request-id}o"]
    return {
        # "h" is "address:port" for a TCP peer ("::1:5000" too), the path for a Unix socket.
        "remote_addr": address.rpartition(":")[0] or address if address else None,
        "method": atoms["m"],
        "path": atoms["U"],
        "protocol": atoms["H"],
        "status": _number(atoms["s"]),
        "bytes": _number(atoms["b"]),
        "duration_us": atoms["D"],
        "request_id": request_id if request_id != "-" else None,
    }


class ServerLinesAsJson(logging.Filter):
    """On one of hypercorn's loggers: its handlers write through ``JsonFormatter``, whenever
    hypercorn set them up (it replaces them when it builds its ``Logger``, which may come after
    the app), and an access line carries its fields (``fields_of_atoms``)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        for handler in self.logger.handlers:
            if not isinstance(handler.formatter, JsonFormatter):
                handler.setFormatter(JsonFormatter())
        atoms = getattr(record, "access_atoms", None)
        if atoms is not None and not hasattr(record, "fields"):
            fields = fields_of_atoms(atoms)
            record.fields = fields
            record.msg = escape_controls(f"{fields['method']} {fields['path']} {fields['status']}")
        return True


def configure_logging(log_format: str) -> None:
    """``json``: a stderr handler writing JSON lines for the ``service`` logger, and hypercorn's
    own logs as JSON lines (``ServerLinesAsJson``), each once. With ``text`` nothing is added:
    warnings reach stderr as they always did."""
    if log_format != "json":
        return
    for name in (ACCESS_LOGGER, ERROR_LOGGER):
        server_logger = logging.getLogger(name)
        if not any(isinstance(item, ServerLinesAsJson) for item in server_logger.filters):
            server_logger.addFilter(ServerLinesAsJson(server_logger))
    logger = logging.getLogger(APP_LOGGER)
    if not any(isinstance(handler, StderrHandler) for handler in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(JsonFormatter())
        handler.addFilter(_not_audit)
        logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
