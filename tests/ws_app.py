"""The service's own app plus guarded ``websocket`` routes, served by hypercorn in
tests/system/test_websockets.py (the service itself has no socket of its own to guard)."""

from __future__ import annotations

from quart import Quart, Response, websocket

from service import (
    Settings,
    create_app,
    current_claims,
    current_user,
    roles_required,
    scope_required,
    token_required,
)

# A page of the service's own origin that opens the echo socket on the cookie session and
# writes what it hears into the page.
SOCKET_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Socket</title></head>
<body><ol id="heard"></ol>
<script>
const socket = new WebSocket(location.origin.replace("http", "ws") + "/ws/echo");
const heard = (text) => {
  const item = document.createElement("li");
  item.textContent = text;
  document.getElementById("heard").append(item);
};
socket.onopen = () => socket.send("from the page");
socket.onmessage = (event) => heard(event.data);
socket.onclose = (event) => heard("closed " + event.code);
</script></body></html>
"""


def create_socket_app(settings: Settings | None = None) -> Quart:
    app = create_app(settings)

    @app.websocket("/ws/echo")
    @token_required
    async def echo() -> None:
        await websocket.accept()
        await websocket.send(f"hello {current_user().username}")
        while True:
            message = await websocket.receive()
            await websocket.send(f"echo {message!s}")

    @app.websocket("/ws/admin")
    @roles_required("admin")
    async def admin() -> None:
        await websocket.accept()
        await websocket.send("admin")

    @app.websocket("/ws/machine")
    @scope_required("feed:read")
    async def machine() -> None:
        await websocket.accept()
        await websocket.send(f"client {current_claims().client_id}")
        while True:
            await websocket.send(f"echo {await websocket.receive()!s}")

    @app.get("/socket-page")
    async def socket_page() -> Response:
        return Response(
            SOCKET_PAGE,
            content_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'"},
        )

    return app


app = create_socket_app()
