#!/usr/bin/env python3
"""A burst of concurrent logins against the service at its default settings: how many are
shed (503), throttled (429) or served, and how long they take.

    .venv/bin/python bench/login_burst.py [--logins 64] [--rounds 3] [--servers all]

Each round opens ``--logins`` new connections at once, each logging in an existing user with
the right password. Every client comes from its own loopback address (127.0.0.2, .3, ...), as
so many users on their own machines would; ``--one-address`` sends them all from 127.0.0.1,
where the per-address throttle (30 attempts a minute by default) refuses what is beyond it.

The peer of each figure is measured in the same run on the same server: the median of single
logins one at a time (``single``; argon2's four lanes already use every core). ``serial`` is
the burst served one login after another: logins x single. The report gives p99 / serial: at
1.0 the last login of the burst waited as long as it would in a queue of one-at-a-time logins.

Servers: ``hypercorn`` (the README's serve command: one process) and ``serve`` (python -m
service.serve, one worker per core). Only 127.0.0.0/8 is used; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
SERVERS = {
    "hypercorn": ["-m", "hypercorn", "-c", str(ROOT / "hypercorn.toml")],
    "serve": ["-m", "service.serve", "--access-logfile", "none"],
}


@dataclass(frozen=True)
class Burst:
    codes: Counter[int]
    seconds: list[float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


async def wait_until_up(base: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(1200):  # at most a minute
            if process.poll() is not None:
                raise SystemExit(f"the server exited with {process.returncode}")
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit("the server did not start within a minute")


async def sign_up(base: str, count: int) -> None:
    limit = asyncio.Semaphore(4)
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def one(index: int) -> None:
            async with limit:
                body = {"username": f"user{index}", "email": f"u{index}@x.io", "password": PASSWORD}
                response = await client.post("/signup", json=body)
                if response.status_code != 201:
                    raise SystemExit(f"signup {index}: {response.status_code} {response.text}")

        await asyncio.gather(*(one(i) for i in range(count)))


async def login(base: str, index: int, address: str) -> tuple[int, float]:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=base, transport=transport, timeout=120) as client:
        started = time.perf_counter()
        response = await client.post(
            "/login", json={"username": f"user{index}", "password": PASSWORD}
        )
        return response.status_code, time.perf_counter() - started


async def burst(base: str, logins: int, one_address: bool) -> Burst:
    def address(index: int) -> str:
        return "127.0.0.1" if one_address else f"127.0.{2 + index // 250}.{2 + index % 250}"

    answers = await asyncio.gather(*(login(base, i, address(i)) for i in range(logins)))
    return Burst(Counter(code for code, _ in answers), [seconds for _, seconds in answers])


async def measure(name: str, args: argparse.Namespace) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix=f"login-burst-{name}-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    env.update(
        PYTHONPATH=str(ROOT),
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'auth.db'}",
        AUTH_INSTANCE_PATH=str(workdir / "instance"),
    )
    command = [sys.executable, *SERVERS[name], "--bind", f"127.0.0.1:{port}", "service.asgi:app"]
    log = (workdir / "server.log").open("wb")
    # A fixed command of this script; started before any request, so blocking is harmless.
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=log)  # noqa: S603, ASYNC220
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_until_up(base, process)
        await sign_up(base, args.logins)
        singles = [(await login(base, i, "127.0.0.1"))[1] for i in range(5)]
        bursts = []
        for _ in range(args.rounds):
            bursts.append(await burst(base, args.logins, args.one_address))
            await asyncio.sleep(2)
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
    codes: Counter[int] = Counter()
    for one in bursts:
        codes.update(one.codes)
    seconds = [s for one in bursts for s in one.seconds]
    single = statistics.median(singles)
    return {
        "server": name,
        "logins": args.logins * args.rounds,
        "codes": dict(sorted(codes.items())),
        "single_s": single,
        "p50_s": percentile(seconds, 0.50),
        "p99_s": percentile(seconds, 0.99),
        "max_s": max(seconds),
        "serial_s": args.logins * single,
    }


def report(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    lines = [
        f"Login burst: {args.logins} concurrent logins x {args.rounds} rounds, default settings, "
        f"{os.cpu_count()} cores, {'one address' if args.one_address else 'one address each'}.",
        "",
        "| server | answers | single login | p50 | p99 | max | p99 / serial |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        codes = ", ".join(f"{n}x{code}" for code, n in row["codes"].items())  # type: ignore[attr-defined]
        lines.append(
            f"| {row['server']} | {codes} | {row['single_s']:.2f} s | {row['p50_s']:.2f} s | "
            f"{row['p99_s']:.2f} s | {row['max_s']:.2f} s | "
            f"{float(row['p99_s']) / float(row['serial_s']):.2f} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--servers", default="all", help="hypercorn, serve or all")
    parser.add_argument("--one-address", action="store_true")
    args = parser.parse_args()
    names = list(SERVERS) if args.servers == "all" else args.servers.split(",")
    rows = [asyncio.run(measure(name, args)) for name in names]
    print(report(rows, args))


if __name__ == "__main__":
    main()
