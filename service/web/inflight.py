"""Requests in progress, so shutting down waits for them before closing the database and pools.

A server's graceful shutdown stops accepting and waits for connections, but the app's own
shutdown (closing the hashing pool and the database) must not run while a request still needs
them: hypercorn can start the lifespan shutdown while some requests are still being handled.
"""

from __future__ import annotations

import asyncio


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self) -> None:
        self.count += 1
        self._idle.clear()

    def finished(self) -> None:
        self.count = max(0, self.count - 1)
        if self.count == 0:
            self._idle.set()

    async def drained(self, within: float) -> bool:
        """Wait until no request is in progress; False if ``within`` seconds passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        return True
