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
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
TRACEBACK_INDENT = "  "


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
        escape_record(record)
        return record


def escape_log_records() -> None:
    """Install the escaping record factory for the whole process (once)."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, EscapingRecordFactory):
        logging.setLogRecordFactory(EscapingRecordFactory(current))
