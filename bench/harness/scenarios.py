"""What is measured: each scenario is a job run once per round, in a shuffled order."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from harness import procfs, source
from harness.catalog import OURS
from harness.log import log
from harness.measure import attach_cpu, measure
from harness.server import Server
from harness.settings import PASSWORD, USERNAME, Load, SettingsError
from harness.source import Source
from harness.wrk import Run, Wrk

SCENARIOS = {
    "protected": "GET /protected at CONNS_LOW connections, every server",
    "protected-high": "GET /protected at CONNS_HIGH connections (not ours' diagnostic variants)",
    "health": "GET /health of ours at CONNS_LOW connections (DIAG=1)",
    "storm": "GET /protected while logins run (ours at HEAD)",
    "logins": "POST /login per second at LOGIN_CONNS connections (ours at HEAD)",
    "hash": "argon2 hash and verify cost, in-process (the HEAD code)",
    "cold": "GET /protected at CONNS_HIGH with a token no worker has seen (ours at HEAD)",
}
Results = dict[str, dict[str, list[Run]]]  # server -> scenario key -> one run per round


def check(only: frozenset[str]) -> None:
    unknown = sorted(only - set(SCENARIOS))
    if unknown:
        raise SettingsError(
            f"ONLY: no scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
        )


@dataclass
class Bench:
    """What every job works with."""

    load: Load
    wrk: Wrk
    python: str
    head: Source
    servers: list[Server]
    results: Results = field(default_factory=dict)
    hashes: list[dict[str, float]] = field(default_factory=list)

    @property
    def ours(self) -> Server:
        return next(server for server in self.servers if server.name == OURS)

    def record(self, server: Server, key: str, result: Run) -> None:
        self.results.setdefault(server.name, {}).setdefault(key, []).append(result)

    def get_load(
        self, script: str, server: Server, conns: int, path: str = "/protected"
    ) -> list[str]:
        token = server.token if server.spec.needs_token else self.ours.token
        return self.wrk.argv(server.base + path, conns, self.load.duration, script, token)

    def login_load(self, server: Server, conns: int, duration: int) -> list[str]:
        return self.wrk.argv(server.base + "/login", conns, duration, "login.lua", None)


def login_env() -> dict[str, str]:
    return {"BENCH_LOGIN_BODY": json.dumps({"username": USERNAME, "password": PASSWORD})}


def protected(bench: Bench, server: Server, conns: int, key: str, path: str = "/protected") -> None:
    """GET ``path`` at ``conns`` connections; ours gets a fresh token, warm in every worker."""
    server.ensure_alive()
    if server.group in ("ours", "diag"):
        server.login()
    # The floor ignores the header; it gets our token so the requests are the same bytes.
    result = measure(server, bench.wrk, bench.get_load("report.lua", server, conns, path))
    bench.record(server, key, result)
    log(
        f"  {server.name:22} {key:12} {result['rps']:9.0f} req/s"
        f"  p50 {result['p50_us'] / 1000:7.1f} ms  p99 {result['p99_us'] / 1000:8.1f} ms"
        f"  sock err {result['socket_errors']}  non-2xx {result['status']}"
        f"  srv {result['server_cpu_ms_per_req']:.2f} ms CPU/req"
        f"  other load {result['other_cores']:.2f} cores"
    )
    server.settle()


def storm(bench: Bench) -> None:
    """/protected alone (*before*), then while logins run from their own wrk (*during*)."""
    server, duration = bench.ours, bench.load.duration
    server.ensure_alive()
    server.login()
    before = measure(
        server, bench.wrk, bench.get_load("report.lua", server, bench.load.storm_conns)
    )
    server.settle()
    cpu0, busy0 = procfs.cpu_seconds(server.pids()), procfs.system_busy_seconds()
    logins_argv = bench.login_load(server, bench.load.storm_logins, duration + 3)
    logins = bench.wrk.start(logins_argv, login_env())
    time.sleep(1.5)
    cpu1, busy1 = procfs.cpu_seconds(server.pids()), procfs.system_busy_seconds()
    during = bench.wrk.run(bench.get_load("report.lua", server, bench.load.storm_conns))
    cpu2, busy2 = procfs.cpu_seconds(server.pids()), procfs.system_busy_seconds()
    login_result = bench.wrk.finish(logins)
    cpu3, busy3 = procfs.cpu_seconds(server.pids()), procfs.system_busy_seconds()
    # The storm's own wrk ran alongside: its CPU is client CPU, not "other load".
    share = login_result["wrk_cpu_s"] * (duration / (duration + 3))
    attach_cpu(during, cpu2 - cpu1, busy2 - busy1, extra_client_cpu=share)
    attach_cpu(login_result, cpu3 - cpu0, busy3 - busy0)
    phases = {"storm_before": before, "storm_during": during, "storm_logins": login_result}
    for key, value in phases.items():
        bench.record(server, key, value)
    log(
        f"  storm: /protected p99 before {before['p99_us'] / 1000:.1f} ms,"
        f" during {during['p99_us'] / 1000:.1f} ms;"
        f" logins {login_result['ok_rps']:.1f}/s non-2xx {login_result['status']}"
    )
    server.settle()


def cold(bench: Bench) -> None:
    """/protected at CONNS_HIGH with a token the server has not seen yet (first use under load)."""
    server, conns = bench.ours, bench.load.conns_high
    server.ensure_alive()
    server.login(warm=False)
    result = measure(server, bench.wrk, bench.get_load("report.lua", server, conns))
    bench.record(server, "cold_high", result)
    log(
        f"  cold token @{conns}: {result['rps']:.0f} req/s  p99 {result['p99_us'] / 1000:.0f} ms"
        f"  non-2xx {result['status']}  timeouts {result['timeout']}"
    )
    server.settle()
    server.login()  # the jobs after this one get a warm token again


def logins(bench: Bench) -> None:
    server, conns = bench.ours, bench.load.login_conns
    server.ensure_alive()
    argv = bench.login_load(server, conns, bench.load.duration)
    result = measure(server, bench.wrk, argv, login_env())
    bench.record(server, "logins", result)
    log(
        f"  logins at {conns} connections: {result['ok_rps']:.2f}/s"
        f"  p50 {result['p50_us'] / 1000:.0f} ms  non-2xx {result['status']}"
        f"  srv CPU {result['server_cores']:.2f} cores"
    )
    server.settle()


def hashing(bench: Bench) -> None:
    cost = source.hash_cost(bench.python, bench.head)
    bench.hashes.append(cost)
    log(
        f"  argon2 hash {cost['hash_cpu_s'] * 1000:.0f} ms CPU"
        f" ({cost['hash_wall_s'] * 1000:.0f} ms wall),"
        f" verify {cost['verify_cpu_s'] * 1000:.0f} ms CPU"
    )


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[], None]


def plan(bench: Bench, only: frozenset[str], diag: bool) -> list[Job]:
    """Every job of a round, in a fixed order (each round shuffles it)."""

    def wanted(scenario: str) -> bool:
        return not only or scenario in only

    low, high = bench.load.conns_low, bench.load.conns_high
    jobs: list[Job] = []
    for server in bench.servers:
        if wanted("protected"):
            jobs.append(
                Job(f"{server.name} p{low}", partial(protected, bench, server, low, "p_low"))
            )
        if wanted("protected-high") and server.spec.at_high:
            job = partial(protected, bench, server, high, "p_high")
            jobs.append(Job(f"{server.name} p{high}", job))
    if diag and wanted("health"):
        for server in bench.servers:
            if server.name == OURS or server.name.startswith(OURS + "@"):
                name = "ours /health" if server.name == OURS else f"{server.name} /health"
                job = partial(protected, bench, server, low, "health_low", "/health")
                jobs.append(Job(name, job))
    singles = [("storm", "storm", storm), ("logins", "logins", logins)]
    singles += [("hash", "hash", hashing), ("cold", "cold token", cold)]
    jobs += [
        Job(name, partial(step, bench)) for scenario, name, step in singles if wanted(scenario)
    ]
    return jobs
