"""The service, but importing it takes two seconds: a signal can arrive while a worker is still
loading the app. Served by the shutdown test of python -m service.serve. Each importing process
first announces "loading" (tests/servers.py)."""

from __future__ import annotations

import time

from tests.servers import announce

announce("loading")
time.sleep(2.0)

from service.asgi import app  # noqa: E402

__all__ = ["app"]
