"""SIGTERM during a burst: every request taken completes (python -m service.serve)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import httpx

from tests.servers import clean_env, free_port, wait_until_up
from tests.support import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


async def start(tmp_path: Path, port: int, workers: int) -> asyncio.subprocess.Process:
    env = clean_env(
        AUTH_ENV="testing",
        AUTH_JWT_SECRET="g" * 48,
        AUTH_THROTTLE_ENABLED="false",
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
    )
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.serve",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        "none",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def send_login(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection and send a whole login request on it: from then on it is in flight."""
    body = json.dumps({"username": "alice", "password": PASSWORD}).encode()
    head = (
        "POST /login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    await writer.drain()
    return reader, writer


async def status_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=60)
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__
    finally:
        writer.close()
    return answer.split(b"\r\n", 1)[0].decode().strip() or "closed without an answer"


async def test_sigterm_during_a_burst_drops_no_in_flight_request(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = await start(tmp_path, port, workers=2)
    try:
        await wait_until_up(base)
        async with httpx.AsyncClient(base_url=base) as client:
            signup = await client.post(
                "/signup", json={"username": "alice", "email": "a@x.io", "password": PASSWORD}
            )
            assert signup.status_code == 201
        # Each login takes a second (tests/slow_app.py): all of them are in flight at the signal.
        connections = await asyncio.gather(*(send_login(port) for _ in range(16)))
        await asyncio.sleep(0.2)
        os.kill(process.pid, signal.SIGTERM)
        results = await asyncio.gather(*(status_line(*c) for c in connections))
        exit_code = await asyncio.wait_for(process.wait(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    log = (await process.stderr.read()).decode() if process.stderr else ""
    assert results == ["HTTP/1.1 200"] * len(results), log[-3000:]
    assert exit_code == 0


async def test_a_worker_that_cannot_start_makes_the_supervisor_fail(tmp_path: Path) -> None:
    env = clean_env(AUTH_ENV="production")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.serve",
        "--workers",
        "2",
        "--bind",
        f"127.0.0.1:{free_port()}",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode != 0
    assert "AUTH_JWT_SECRET" in stderr.decode()
