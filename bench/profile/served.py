"""Server CPU per request of GET /protected over real sockets, one hypercorn worker each
(``python -m service.serve --workers 1``, the README's supervisor), driven by wrk from the other
core. The servers run side by side; the rounds alternate between them (interleaved), so a change
of load on the machine hits each alike. CPU is the utime+stime of the server's process tree from
/proc, divided by the requests wrk completed.

    /work/main/.venv/bin/python bench/profile/served.py [--rounds 3] [--seconds 5] [--conns 16]

Servers: null (bench/profile/null_asgi.py: hypercorn + asyncio + kernel only), floor
(bench/peers/quart_floor.py), ours (service.asgi:app, SQLite), ours-redis (AUTH_REDIS_URL).
"""

# ruff: noqa: S603, S310 (the script runs its own commands and asks its own loopback servers)

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
USERNAME, PASSWORD, EMAIL = "bench", "correct-horse-battery-staple-42", "bench@example.com"
TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> tuple[float, float]:
    """(user, system) seconds of pid and its descendants (live ones)."""
    pids, frontier = [pid], [pid]
    while frontier:
        current = frontier.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            children = []
        for child in map(int, children):
            pids.append(child)
            frontier.append(child)
    user = system = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / TICK
        system += int(fields[12]) / TICK
    return user, system


class Server:
    def __init__(self, name: str, app: str, port: int, env: dict[str, str], work: Path) -> None:
        self.name, self.app, self.port, self.work = name, app, port, work
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")} | env
        self.token = "x" * 300
        self.results: list[tuple[float, float, int]] = []

    def start(self, ours: bool) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        if ours:
            upgrade = [python, "-m", "service", "db", "upgrade"]
            subprocess.run(upgrade, cwd=self.work, env=self.env, check=True, capture_output=True)
            create = [python, "-m", "service", "users", "create", USERNAME, "--email", EMAIL]
            subprocess.run(
                [*create, "--password-stdin"],
                input=(PASSWORD + "\n").encode(),
                cwd=self.work,
                env=self.env,
                check=True,
                capture_output=True,
            )
        argv = [
            python,
            "-m",
            "service.serve",
            "--config",
            str(ROOT / "hypercorn.toml"),
            "--workers",
            "1",
            "--access-logfile",
            "none",
            "--bind",
            f"127.0.0.1:{self.port}",
            self.app,
        ]
        self.log = (self.work / "server.log").open("wb")
        self.process = subprocess.Popen(
            argv, cwd=self.work, env=self.env, stdout=self.log, stderr=self.log
        )
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/protected", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # answers (401 without a token)
            except OSError:
                time.sleep(0.1)
        if ours:
            data = json.dumps({"username": USERNAME, "password": PASSWORD}).encode()
            req = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/login",
                data=data,
                headers={"Content-Type": "application/json"},
            )
            self.token = json.loads(urllib.request.urlopen(req, timeout=30).read())["access_token"]

    def wrk(self, seconds: int, conns: int) -> int:
        argv = [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{seconds}s",
            "-H",
            f"Authorization: Bearer {self.token}",
            f"http://127.0.0.1:{self.port}/protected",
        ]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        if "Non-2xx" in out:
            raise RuntimeError(f"{self.name}: non-2xx answers\n{out}")
        found = re.search(r"(\d+) requests in", out)
        if found is None:
            raise RuntimeError(f"{self.name}: no request count in wrk's output\n{out}")
        return int(found.group(1))

    def measure(self, seconds: int, conns: int) -> None:
        u0, s0 = tree_cpu(self.process.pid)
        requests = self.wrk(seconds, conns)
        u1, s1 = tree_cpu(self.process.pid)
        self.results.append(((u1 - u0) / requests * 1e6, (s1 - s0) / requests * 1e6, requests))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--port", type=int, default=18900)
    parser.add_argument("--servers", default="null,floor,ours,ours-redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="profile-served-"))
    common = {"AUTH_ENV": "development", "AUTH_JWT_SECRET": "profile-secret-" + "x" * 40}
    catalog = {
        "null": ("null_asgi:app", {"PYTHONPATH": str(ROOT / "bench" / "profile")}, False),
        "floor": ("quart_floor:app", {"PYTHONPATH": str(ROOT / "bench" / "peers")}, False),
        "ours": ("service.asgi:app", {}, True),
        "ours-redis": (
            "service.asgi:app",
            {
                "AUTH_REDIS_URL": args.redis_url,
                "AUTH_REDIS_PREFIX": f"profile-{secrets.token_hex(4)}",
            },
            True,
        ),
    }
    servers = []
    for i, name in enumerate(args.servers.split(",")):
        app, env, ours = catalog[name]
        work = base / name
        env = common | env | {"AUTH_DATABASE_URL": f"sqlite+aiosqlite:///{work}/auth.db"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
        server = Server(name, app, args.port + i, env, work)
        server.start(ours)
        servers.append(server)
    try:
        for server in servers:  # warm: the token into the worker's caches
            server.wrk(1, 8)
        for _ in range(args.rounds):
            for server in servers:
                time.sleep(0.5)
                server.measure(args.seconds, args.conns)
    finally:
        for server in servers:
            server.stop()
    print(
        f"# server CPU µs/request (user+sys), wrk -t1 -c{args.conns} -d{args.seconds}s, "
        f"{args.rounds} interleaved rounds, load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'server':<12}{'median':>8}{'user':>8}{'sys':>8}   rounds (total µs)   req/s")
    out = {}
    for server in servers:
        totals = [u + s for u, s, _ in server.results]
        print(
            f"{server.name:<12}{statistics.median(totals):>8.1f}"
            f"{statistics.median(u for u, _, _ in server.results):>8.1f}"
            f"{statistics.median(s for _, s, _ in server.results):>8.1f}   "
            + " ".join(f"{t:.1f}" for t in totals)
            + "   "
            + " ".join(f"{r / args.seconds:.0f}" for _, _, r in server.results)
        )
        out[server.name] = server.results
    print(json.dumps(out))


if __name__ == "__main__":
    main()
