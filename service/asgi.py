"""The ASGI application: ``hypercorn -c hypercorn.toml service.asgi:app``."""

from __future__ import annotations

import sys

from service.core.config import ConfigError
from service.ops.runtime import tune_garbage_collector
from service.web.app import create_app
from service.web.state import get_state

try:
    app = create_app()
except ConfigError as exc:
    # One clear line and a non-zero exit, not a traceback.
    print(f"auth-service: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


@app.before_serving
async def _tune_garbage_collector() -> None:
    # After the app's own start-up (migrations, the first hash): see service/ops/runtime.py.
    if get_state(app).settings.gc_tuning:
        tune_garbage_collector()
