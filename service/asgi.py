"""The ASGI application: ``hypercorn -c hypercorn.toml service.asgi:app``."""

from __future__ import annotations

import sys

from .app import create_app
from .config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # One clear line and a non-zero exit, not a traceback.
    print(f"auth-service: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
