"""The real server: hypercorn with hypercorn.toml starts on the SQLite default, or refuses to."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.servers import HYPERCORN, clean_env, free_port, wait_until_up

# Every test starts hypercorn.
pytestmark = pytest.mark.slow


async def test_production_without_a_secret_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        *HYPERCORN,
        "--bind",
        f"127.0.0.1:{free_port()}",
        "service.asgi:app",
        cwd=tmp_path,
        env=clean_env(AUTH_ENV="production"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode != 0
    lines = stderr.decode().strip().splitlines()
    assert lines == [
        "auth-service: configuration error: "
        "AUTH_ENV=production needs AUTH_JWT_SECRET of at least 32 bytes"
    ]
    assert not (tmp_path / "instance" / "jwt_secret").exists()


async def test_first_run_on_sqlite_migrates_and_serves(tmp_path: Path) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *HYPERCORN,
        "--bind",
        f"127.0.0.1:{port}",
        "service.asgi:app",
        cwd=tmp_path,
        env=clean_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until_up(f"http://127.0.0.1:{port}", process)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            signup = await client.post(
                "/signup",
                json={"username": "alice", "email": "a@x.io", "password": "long enough pw"},
            )
            ready = await client.get("/ready")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)

    assert signup.status_code == 201
    assert ready.status_code == 200
    assert (tmp_path / "instance" / "auth.db").exists()
    secret = tmp_path / "instance" / "jwt_secret"
    assert secret.stat().st_mode & 0o777 == 0o600
