"""The floor: a bare Quart route, no token, no database.

Served as ours is (bench/harness/catalog.py builds the command):

    python -m service.serve --config hypercorn.toml --workers 2 --access-logfile none
        --bind 127.0.0.1:PORT quart_floor:app
"""

from __future__ import annotations

from quart import Quart

app = Quart(__name__)
USER = {"id": "00000000-0000-4000-8000-000000000000", "username": "bench"}


@app.get("/protected")
async def protected() -> dict[str, str]:
    return USER
