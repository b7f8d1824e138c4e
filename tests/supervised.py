"""``python -m service.serve`` as the README runs it (or plain ``hypercorn -c hypercorn.toml``, as
the contract does), with everything it writes kept."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import HANG_GUARD_SECONDS, HYPERCORN, free_port

SERVING = "serving on "
# hypercorn's own start-up line (its error log), once it listens.
HYPERCORN_SERVING = "Running on "


@dataclass
class Supervised:
    base: str
    process: asyncio.subprocess.Process
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Every line written so far, stdout's then stderr's."""
        return [*self.stdout, *self.stderr]


async def _collect(stream: asyncio.StreamReader | None, into: list[str]) -> None:
    assert stream is not None
    while line := await stream.readline():
        into.append(line.decode(errors="replace").rstrip("\n"))


@asynccontextmanager
async def supervised_server(
    folder: Path, env: dict[str, str], *, workers: int = 2, plain_hypercorn: bool = False
) -> AsyncIterator[Supervised]:
    """The supervisor on a free port, ``folder`` its working directory; yields once every
    worker serves (its line on stderr), and on leaving stops it with SIGTERM and waits for its
    end, so that ``stdout``/``stderr`` then hold all it wrote. ``plain_hypercorn``: hypercorn
    itself in one process (``workers`` unused), yielding once it listens."""
    port = free_port()
    if plain_hypercorn:
        command = [*HYPERCORN, "--bind", f"127.0.0.1:{port}", "service.asgi:app"]
        ready = HYPERCORN_SERVING
    else:
        command = [sys.executable, "-m", "service.serve", "--workers", str(workers)]
        command += ["--bind", f"127.0.0.1:{port}"]
        ready = SERVING
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=folder,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    server = Supervised(base=f"http://127.0.0.1:{port}", process=process)
    collectors = [
        asyncio.create_task(_collect(process.stdout, server.stdout)),
        asyncio.create_task(_collect(process.stderr, server.stderr)),
    ]
    try:
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        while not any(ready in line for line in server.stderr):
            if process.returncode is not None:
                raise AssertionError(
                    f"the server exited with {process.returncode}: {server.stderr}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"the server hung in start-up: {server.stderr}")
            await asyncio.sleep(0.05)
        yield server
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=60)
        await asyncio.gather(*collectors)
