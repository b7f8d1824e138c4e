"""The ASGI application: ``hypercorn -c hypercorn.toml service.asgi:app``."""

from __future__ import annotations

import sys

from .app import create_app
from .config import ConfigError
from .runtime import tune_garbage_collector
from .state import get_state

try:
    app = create_app()
except ConfigError as exc:
    # One clear line and a non-zero exit, not a traceback.
    print(f"auth-service: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


@app.before_serving
async def _tune_garbage_collector() -> None:
    # After the app's own start-up (migrations, the first hash): see service/runtime.py.
    if get_state(app).settings.gc_tuning:
        tune_garbage_collector()
