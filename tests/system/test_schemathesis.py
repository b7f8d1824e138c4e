"""Spec-driven fuzzing: schemathesis 4 against the running service's own /openapi.json.

All phases (examples, coverage, fuzzing, stateful through the declared links signup -> login
-> refresh -> logout), the four checks, a fixed seed, a time budget of about two minutes.
Every failure it ever found is pinned as a regression test elsewhere in the suite.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from tests.servers import clean_env, hypercorn_server
from tests.support import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,ignored_auth"
SEED = "20261129"
BUDGET_SECONDS = "100"


@pytest.mark.slow
async def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    env = clean_env(
        AUTH_ENV="testing",
        AUTH_JWT_SECRET="f" * 48,
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
        AUTH_ARGON2_PARALLELISM="1",
        AUTH_THROTTLE_ACCOUNT_LIMITS="1000/minute",
        AUTH_THROTTLE_IP_LIMITS="100000/minute",
        AUTH_THROTTLE_REFRESH_LIMITS="100000/minute",
    )
    async with hypercorn_server(tmp_path, env) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            await client.post(
                "/signup", json={"username": "fuzzer", "email": "f@x.io", "password": PASSWORD}
            )
            # A token for the guarded routes; the stateful phase also logs in through the links.
            token = (
                await client.post("/login", json={"username": "fuzzer", "password": PASSWORD})
            ).json()["access_token"]
        fuzz = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{base}/openapi.json",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--checks",
            CHECKS,
            "--seed",
            SEED,
            "--max-time",
            BUDGET_SECONDS,
            "--max-examples",
            "30",
            "--workers",
            "1",
            "--header",
            f"Authorization: Bearer {token}",
            "--exclude-path-regex",
            "^/(docs|redocs|openapi.json)",
            cwd=tmp_path,
            env=clean_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(fuzz.communicate(), timeout=280)

    report = output.decode(errors="replace")
    assert fuzz.returncode == 0, report[-6000:]
    assert "Stateful" in report or "stateful" in report, report[-3000:]
