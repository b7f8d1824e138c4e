"""The ASGI application: ``hypercorn -c hypercorn.toml service.asgi:app``."""

from __future__ import annotations

import logging

from service.core.config import ConfigError
from service.ops.runtime import tune_garbage_collector
from service.ops.serve import log_format, say
from service.web.app import create_app
from service.web.state import get_state

try:
    app = create_app()
except ConfigError as exc:
    # One clear line (JSON under AUTH_LOG_FORMAT=json) and a non-zero exit, not a traceback.
    say(f"configuration error: {exc}", json_lines=log_format() == "json", level=logging.ERROR)
    raise SystemExit(2) from None


@app.before_serving
async def _tune_garbage_collector() -> None:
    # After the app's own start-up (migrations, the first hash): see service/ops/runtime.py.
    if get_state(app).settings.gc_tuning:
        tune_garbage_collector()
