"""The service plus ``GET /worker``, which names the process that answered: served by the test
of how ``python -m service.serve`` spreads connections over its workers.

With ``TEST_PID_APP_HOLD`` naming a folder, the first process to import this module goes on and
every later one stays in the import (the app still loading, its socket bound but not listening),
announcing "held" (tests/servers.py), until the file ``go`` exists there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from service.web.app import create_app
from tests.servers import announce


def _hold_all_but_the_first(folder: Path) -> None:
    try:
        (folder / "first").touch(exist_ok=False)
    except FileExistsError:
        announce("held")
        while not (folder / "go").exists():
            time.sleep(0.01)


if hold := os.environ.get("TEST_PID_APP_HOLD"):
    _hold_all_but_the_first(Path(hold))

app = create_app()


@app.get("/worker")
async def worker() -> dict[str, int]:
    return {"pid": os.getpid()}
