"""An ASGI app that answers GET /protected's bytes at once: what is left is the server's own cost
(hypercorn's HTTP handling, asyncio, the kernel's socket work). Used by bench/profile/served.py."""

from __future__ import annotations

from typing import Any

BODY = b'{"id":"00000000-0000-4000-8000-000000000000","username":"bench"}\n'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY, "more_body": False})
