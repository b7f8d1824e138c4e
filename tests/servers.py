"""Real processes for the tests that need one: ports, a clean environment, start-up, commands."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
HYPERCORN = [sys.executable, "-m", "hypercorn", "-c", str(ROOT / "hypercorn.toml")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any AUTH_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_python(
    *args: str, cwd: Path, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``python *args`` in a child process, its output captured, at most two minutes."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_service_command(
    tmp_path: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``python -m service *args`` on a testing environment with its database in ``tmp_path``."""
    env = clean_env(
        AUTH_ENV="testing",
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
    )
    return run_python("-m", "service", *args, cwd=ROOT, env=env, stdin=stdin)


async def wait_until_up(base: str, attempts: int = 400) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(attempts):
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError(f"the server at {base} did not start")


@asynccontextmanager
async def hypercorn_server(
    workdir: Path, env: dict[str, str], app: str = "service.asgi:app"
) -> AsyncIterator[str]:
    """``hypercorn -c hypercorn.toml`` on a free port; yields its base URL once it answers."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *HYPERCORN,
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        "/dev/null",
        app,
        cwd=workdir,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_until_up(base)
        yield base
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
