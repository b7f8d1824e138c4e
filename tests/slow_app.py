"""The service with logins that take a second (an awaited hook sleeps): requests stay in flight
long enough to be caught by a signal, without loading the CPU. Served by the shutdown test; each
login announces "in flight" (tests/servers.py) as its second begins."""

from __future__ import annotations

import asyncio
from typing import Any

from service.accounts.hooks import AuthHooks
from service.store.models import User
from service.web.app import create_app
from tests.servers import announce


async def slow_claims(user: User) -> dict[str, Any]:
    announce("in flight")
    await asyncio.sleep(1.0)
    return {}


app = create_app(hooks=AuthHooks(additional_claims=slow_claims))
