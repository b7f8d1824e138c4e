"""python -m service.serve: SIGTERM during a burst completes every request taken; new
connections are spread over the workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.servers import clean_env, free_port, wait_until_up
from tests.support import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


async def start(
    tmp_path: Path,
    port: int,
    workers: int,
    app: str = "service.asgi:app",
    *,
    reuse_port: bool = True,
) -> asyncio.subprocess.Process:
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
        *([] if reuse_port else ["--no-reuse-port"]),
        app,
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


async def _workers_answering(tmp_path: Path, connections: int, *, reuse_port: bool) -> Counter[int]:
    """Serve tests/pid_app.py on two workers; which worker answered each of ``connections``
    new connections, opened 8 at a time."""
    port = free_port()
    process = await start(tmp_path, port, 2, "tests.pid_app:app", reuse_port=reuse_port)
    seen: Counter[int] = Counter()
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
    try:
        await wait_until_up(f"http://127.0.0.1:{port}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:
            for _ in range(connections // 8):
                answers = await asyncio.gather(*(client.get("/worker") for _ in range(8)))
                seen.update(answer.json()["pid"] for answer in answers)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=60)
    return seen


@pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT balancing is Linux's")
async def test_new_connections_are_spread_over_the_workers(tmp_path: Path) -> None:
    seen = await _workers_answering(tmp_path, 96, reuse_port=True)

    assert len(seen) == 2, seen
    # Each connection lands on a worker by the hash of its address: about half each. Fewer
    # than 20 of 96 on one worker has a probability under 1e-8 with an even spread.
    assert min(seen.values()) >= 20, seen


async def test_workers_can_share_one_socket_instead(tmp_path: Path) -> None:
    seen = await _workers_answering(tmp_path, 16, reuse_port=False)

    assert sum(seen.values()) == 16
    assert len(seen) in (1, 2)


async def test_sigterm_while_the_workers_still_load_the_app_stops_them(tmp_path: Path) -> None:
    process = await start(tmp_path, free_port(), workers=2, app="tests.slow_import_app:app")
    await asyncio.sleep(0.8)  # the workers run, still importing the app
    process.terminate()
    try:
        exit_code = await asyncio.wait_for(process.wait(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert exit_code == 0
