"""Login timing of an unknown user, a wrong password and a disabled account (no enumeration).

Starts the service (hypercorn, default argon2 parameters, throttling off) on a temporary SQLite
database, then measures TRIES interleaved logins of each kind and prints the medians and their
spread. Run by hand: `.venv/bin/python bench/enumeration.py` (about a minute).
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
TRIES = int(os.environ.get("TRIES", "20"))
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="auth-enum-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    env.update(
        PYTHONPATH=str(ROOT),
        AUTH_ENV="testing",
        AUTH_JWT_SECRET="e" * 48,
        AUTH_THROTTLE_ENABLED="false",
    )
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
            for name in ("alice", "dora"):
                client.post(
                    "/signup",
                    json={"username": name, "email": f"{name}@x.io", "password": PASSWORD},
                )
            subprocess.run(
                [sys.executable, "-m", "service", "users", "disable", "dora"],
                cwd=workdir,
                env={**env, "AUTH_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/instance/auth.db"},
                check=True,
                capture_output=True,
            )
            cases = {
                "unknown user": {"username": "nobody", "password": PASSWORD},
                "wrong password": {"username": "alice", "password": "not the password"},
                "disabled account": {"username": "dora", "password": PASSWORD},
            }
            timings: dict[str, list[float]] = {case: [] for case in cases}
            bodies: dict[str, set[bytes]] = {case: set() for case in cases}
            for _ in range(2):  # warm-up
                for body in cases.values():
                    client.post("/login", json=body)
            for _ in range(TRIES):
                for case, body in cases.items():
                    started = time.perf_counter()
                    response = client.post("/login", json=body)
                    timings[case].append(time.perf_counter() - started)
                    bodies[case].add(response.content)
        medians = {case: statistics.median(values) for case, values in timings.items()}
        low, high = min(medians.values()), max(medians.values())
        print(f"{TRIES} tries each, default argon2 parameters, {os.cpu_count()} cores")
        for case, median in medians.items():
            print(
                f"  {case:17s} median {median * 1000:7.1f} ms  (status bodies: {len(bodies[case])})"
            )
        print(f"  spread of the medians: {(high - low) / low * 100:.1f}% (target: within ~10%)")
        print(f"  identical bodies across cases: {len(set().union(*bodies.values())) == 1}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
