"""POST /password/forgot timing for an address with an account and one without (no enumeration).

Starts the service (hypercorn, throttling off, mail written as .eml files: no SMTP server, and
requests never wait for mail anyway) on a temporary SQLite database, or on PostgreSQL with
``AUTH_DATABASE_URL``, then measures TRIES interleaved requests of each kind and prints the
medians, their spread, and whether status, body and headers were identical. Run by hand:
`.venv/bin/python bench/enumeration_reset.py` (under a minute).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
TRIES = int(os.environ.get("TRIES", "200"))
# Headers that differ between any two answers, whatever they answer.
PER_REQUEST = {"date", "x-request-id"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="auth-enum-reset-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    env.update(
        PYTHONPATH=str(ROOT),
        AUTH_ENV="testing",
        AUTH_JWT_SECRET="e" * 48,
        AUTH_THROTTLE_ENABLED="false",
    )
    if os.environ.get("AUTH_DATABASE_URL"):
        env["AUTH_DATABASE_URL"] = os.environ["AUTH_DATABASE_URL"]
    server = subprocess.Popen(  # noqa: S603 (a fixed command of this script)
        [
            sys.executable,
            "-m",
            "hypercorn",
            "-c",
            str(ROOT / "hypercorn.toml"),
            "--bind",
            f"127.0.0.1:{port}",
            "--access-logfile",
            "/dev/null",
            "service.asgi:app",
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(200):
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            client.post(
                "/signup",
                json={"username": "alice", "email": "alice@x.io", "password": PASSWORD},
            )
            cases = {"existing address": "alice@x.io", "unknown address": "nobody@x.io"}
            timings: dict[str, list[float]] = {case: [] for case in cases}
            answers: dict[str, set[tuple[int, bytes, frozenset[tuple[str, str]]]]] = {
                case: set() for case in cases
            }
            for _ in range(5):  # warm-up
                for email in cases.values():
                    client.post("/password/forgot", json={"email": email})
            for _ in range(TRIES):
                for case, email in cases.items():
                    started = time.perf_counter()
                    response = client.post("/password/forgot", json={"email": email})
                    timings[case].append(time.perf_counter() - started)
                    headers = frozenset(
                        (k.lower(), v) for k, v in response.headers.items() if k not in PER_REQUEST
                    )
                    answers[case].add((response.status_code, response.content, headers))
        medians = {case: statistics.median(values) for case, values in timings.items()}
        low, high = min(medians.values()), max(medians.values())
        backend = "PostgreSQL" if "postgresql" in env.get("AUTH_DATABASE_URL", "") else "SQLite"
        print(f"POST /password/forgot, {TRIES} tries each, {backend}, {os.cpu_count()} cores")
        for case, median in medians.items():
            spread = statistics.quantiles(timings[case], n=4)
            print(
                f"  {case:17s} median {median * 1000:6.2f} ms  "
                f"(quartiles {spread[0] * 1000:.2f}-{spread[2] * 1000:.2f} ms; "
                f"distinct answers: {len(answers[case])})"
            )
        print(
            f"  difference of the medians: {(high - low) * 1000:.2f} ms ({(high - low) / low:.1%})"
        )
        print(f"  identical answers across cases: {len(set().union(*answers.values())) == 1}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
