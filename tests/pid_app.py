"""The service plus ``GET /worker``, which names the process that answered: served by the test
of how ``python -m service.serve`` spreads connections over its workers."""

from __future__ import annotations

import os

from service.app import create_app

app = create_app()


@app.get("/worker")
async def worker() -> dict[str, int]:
    return {"pid": os.getpid()}
