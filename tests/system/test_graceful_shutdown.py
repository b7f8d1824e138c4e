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

from tests.servers import (
    announced,
    announcements,
    clean_env,
    free_port,
    hold_workers_at_start,
    wait_for_line,
    wait_until_up,
)
from tests.support import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
SERVING = "auth-service: serving on "

# Every test starts python -m service.serve and its worker processes.
pytestmark = pytest.mark.slow


async def start(
    tmp_path: Path,
    port: int,
    workers: int,
    app: str = "service.asgi:app",
    *,
    reuse_port: bool = True,
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    variables = clean_env(
        AUTH_ENV="testing",
        AUTH_JWT_SECRET="g" * 48,
        AUTH_THROTTLE_ENABLED="false",
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
        **(env or {}),
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
        env=variables,
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
    async with announcements(tmp_path / "announcements") as heard:
        env = {"TEST_ANNOUNCE_TO": str(tmp_path / "announcements")}
        process = await start(tmp_path, port, workers=2, app="tests.slow_app:app", env=env)
        try:
            await wait_until_serving(process)
            async with httpx.AsyncClient(base_url=base) as client:
                signup = await client.post(
                    "/signup", json={"username": "alice", "email": "a@x.io", "password": PASSWORD}
                )
                assert signup.status_code == 201
            # Each login takes a second (tests/slow_app.py) once a worker has taken it: the
            # signal comes when every one of them has said so, in the middle of that second.
            connections = await asyncio.gather(*(send_login(port) for _ in range(16)))
            for _ in connections:
                await announced(heard, "in flight")
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


async def wait_until_serving(process: asyncio.subprocess.Process) -> str:
    """The supervisor's line saying every worker serves, once it comes."""
    assert process.stderr is not None
    return await asyncio.wait_for(wait_for_line(process.stderr, SERVING), timeout=60)


async def workers_answering(client: httpx.AsyncClient, connections: int) -> Counter[int]:
    """Which worker answered each of ``connections`` new connections, opened 8 at a time."""
    seen: Counter[int] = Counter()
    for _ in range(connections // 8):
        answers = await asyncio.gather(*(client.get("/worker") for _ in range(8)))
        seen.update(answer.json()["pid"] for answer in answers)
    return seen


def new_connection_per_request(port: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits)


async def _workers_answering(tmp_path: Path, connections: int, *, reuse_port: bool) -> Counter[int]:
    """Serve tests/pid_app.py on two workers; which worker answered each of ``connections``
    new connections once the supervisor says both serve."""
    port = free_port()
    process = await start(tmp_path, port, 2, "tests.pid_app:app", reuse_port=reuse_port)
    try:
        await wait_until_serving(process)
        async with new_connection_per_request(port) as client:
            return await workers_answering(client, connections)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=60)


@pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT balancing is Linux's")
async def test_new_connections_are_spread_over_the_workers(tmp_path: Path) -> None:
    seen = await _workers_answering(tmp_path, 96, reuse_port=True)

    assert len(seen) == 2, seen
    # Each connection lands on a worker by the hash of its address: about half each. Fewer
    # than 20 of 96 on one worker has a probability under 1e-8 with an even spread.
    assert min(seen.values()) >= 20, seen


@pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT balancing is Linux's")
async def test_serving_is_announced_once_every_worker_listens(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.mkdir()
    port = free_port()
    async with announcements(tmp_path / "announcements") as heard:
        env = {"TEST_PID_APP_HOLD": str(hold), "TEST_ANNOUNCE_TO": str(tmp_path / "announcements")}
        process = await start(tmp_path, port, 2, "tests.pid_app:app", env=env)
        try:
            # One worker serves, the other is held while it loads the app.
            await announced(heard, "held")
            await wait_until_up(f"http://127.0.0.1:{port}")
            async with new_connection_per_request(port) as client:
                while_one_loads = await workers_answering(client, 16)
                (hold / "go").touch()
                line = await wait_until_serving(process)
                once_announced = await workers_answering(client, 96)
        finally:
            (hold / "go").touch()
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout=60)

    # The loading worker's socket is bound but not listening yet: the kernel gives it nothing.
    assert len(while_one_loads) == 1, while_one_loads
    assert line == f"auth-service: serving on http://127.0.0.1:{port} with 2 workers"
    assert len(once_announced) == 2, once_announced
    assert min(once_announced.values()) >= 20, once_announced


async def test_workers_can_share_one_socket_instead(tmp_path: Path) -> None:
    seen = await _workers_answering(tmp_path, 16, reuse_port=False)

    assert sum(seen.values()) == 16
    assert len(seen) in (1, 2)


async def test_sigterm_while_a_worker_still_loads_the_app_stops_it(tmp_path: Path) -> None:
    async with announcements(tmp_path / "announcements") as heard:
        env = {"TEST_ANNOUNCE_TO": str(tmp_path / "announcements")}
        app = "tests.slow_import_app:app"
        process = await start(tmp_path, free_port(), workers=2, app=app, env=env)
        try:
            await announced(heard, "loading")  # a worker imports the app, for two seconds
            process.terminate()
            exit_code = await asyncio.wait_for(process.wait(), timeout=30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    assert exit_code == 0


async def test_sigterm_that_reaches_a_worker_still_starting_its_interpreter_stops_it(
    tmp_path: Path,
) -> None:
    # The worker is held in interpreter start-up, before any of service.serve runs in it, when
    # the signal reaches it: a signal it ignores then is lost for good and the supervisor waits
    # for that worker forever.
    hold = tmp_path / "hold"
    async with announcements(tmp_path / "announcements") as heard:
        env = {**hold_workers_at_start(hold), "TEST_ANNOUNCE_TO": str(tmp_path / "announcements")}
        process = await start(tmp_path, free_port(), workers=1, env=env)
        try:
            worker = await announced(heard, "starting")
            os.kill(worker, signal.SIGTERM)  # what the supervisor forwards on its own SIGTERM
            (hold / "go").touch()
            exit_code = await asyncio.wait_for(process.wait(), timeout=60)
        finally:
            (hold / "go").touch()
            if process.returncode is None:
                process.kill()
                await process.wait()

    assert exit_code == 0
