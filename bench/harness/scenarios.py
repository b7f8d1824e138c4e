"""What is measured: each scenario is a job run once per round, in a shuffled order."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from harness import procfs, source
from harness.catalog import FLOOR, ISSUER, OURS, RESOURCE_SERVERS
from harness.client import http, post_form
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
    "resource-server": (
        "GET /stock of examples/resource_server (with Redis, without) with a token of "
        "ours-es256, and the floor's /protected, at CONNS_LOW connections"
    ),
    "client-credentials": (
        "POST /token grant_type=client_credentials per second at CC_CONNS (ours, ours-es256) "
        "and at CONNS_LOW (ours-es256)"
    ),
}
CLIENT_NAME, CLIENT_SCOPE = "bench-client", "bench:read"
REDIS_PROCESS = "redis-server"
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
    client_auth: dict[str, str] = field(default_factory=dict)  # server -> its Basic header

    @property
    def ours(self) -> Server:
        return next(server for server in self.servers if server.name == OURS)

    def named(self, name: str) -> Server | None:
        return next((server for server in self.servers if server.name == name), None)

    def token_for(self, server: Server) -> str:
        """The token ``server`` is sent: its own, its token service's, or (the floor) ours."""
        if server.spec.token_from is not None:
            issuer = self.named(server.spec.token_from)
            assert issuer is not None, f"{server.name} runs without {server.spec.token_from}"
            return issuer.token
        return server.token if server.spec.needs_token else self.ours.token

    def record(self, server: Server, key: str, result: Run) -> None:
        self.results.setdefault(server.name, {}).setdefault(key, []).append(result)

    def get_load(
        self,
        script: str,
        server: Server,
        conns: int,
        path: str = "/protected",
        token: str | None = None,
    ) -> list[str]:
        token = token or self.token_for(server)
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


def resource(bench: Bench, server: Server) -> None:
    """The guarded route at CONNS_LOW with a token of the ES256 service: /stock of a resource
    server (the token fresh in every worker, as for ours), or the floor's /protected."""
    issuer, conns = bench.named(ISSUER), bench.load.conns_low
    assert issuer is not None
    issuer.ensure_alive()
    server.ensure_alive()
    token, path = issuer.token, server.spec.guarded_path
    if server.group == "resource":
        bearer = {"Authorization": f"Bearer {token}"}
        status, body = http("GET", server.base + path, headers=bearer)
        if status != 200:
            raise RuntimeError(f"{server.name}: GET {path} answered {status}: {body[:300]!r}")
        bench.wrk.run(bench.wrk.argv(server.base + path, 8, 1, "report.lua", token))
        server.settle()
    redis = procfs.pids_named(REDIS_PROCESS)
    redis_before = procfs.cpu_seconds(redis)
    result = measure(server, bench.wrk, bench.get_load("report.lua", server, conns, path, token))
    # The whole redis-server, which other work on this machine may use too: an upper bound.
    result["redis_cpu_s"] = procfs.cpu_seconds(redis) - redis_before if redis else None
    bench.record(server, "rs_low", result)
    log(
        f"  {server.name:22} GET {path:10} {result['rps']:9.0f} req/s"
        f"  p99 {result['p99_us'] / 1000:7.1f} ms  non-2xx {result['status']}"
        f"  sock err {result['socket_errors']}"
        f"  srv {result['server_cpu_ms_per_req'] * 1000:.0f} µs CPU/req"
        f"  other load {result['other_cores']:.2f} cores"
    )
    server.settle()


def client_header(bench: Bench, server: Server) -> str:
    """HTTP Basic for a machine client of ``server``, created on first use with its CLI."""
    if server.name in bench.client_auth:
        return bench.client_auth[server.name]
    argv = [bench.python, "-m", "service", "clients", "create", CLIENT_NAME]
    result = subprocess.run(  # noqa: S603 (the service's own CLI)
        [*argv, "--scope", CLIENT_SCOPE],
        cwd=server.spec.workdir,
        env=server.full_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{server.name}: clients create failed:\n{result.stderr[-2000:]}")
    client = json.loads(result.stdout)
    pair = f"{client['client_id']}:{client['client_secret']}".encode()
    header = "Basic " + base64.b64encode(pair).decode()
    status, body = post_form(
        server.base + "/token", {"grant_type": "client_credentials"}, {"Authorization": header}
    )
    if status != 200:
        raise RuntimeError(f"{server.name}: POST /token answered {status}: {body[:300]!r}")
    bench.client_auth[server.name] = header
    return header


def client_credentials(bench: Bench, server: Server, conns: int, key: str) -> None:
    server.ensure_alive()
    header = client_header(bench, server)
    argv = bench.wrk.argv(
        server.base + "/token", conns, bench.load.duration, "client_credentials.lua", None
    )
    result = measure(server, bench.wrk, argv, {"BENCH_CLIENT_AUTH": header})
    bench.record(server, key, result)
    ok = result["requests"] - result["status"]
    log(
        f"  {server.name:22} POST /token cc @{conns}: {result['ok_rps']:.0f} tokens/s"
        f"  non-2xx {result['status']} (429: {result['status_429']})"
        f"  p99 {result['p99_us'] / 1000:.1f} ms"
        f"  srv {1e6 * result['server_cpu_s'] / max(ok, 1):.0f} µs CPU/token"
        f"  other load {result['other_cores']:.2f} cores"
    )
    server.settle()


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
        if server.group in ("issuer", "resource"):
            continue  # the scenarios below measure these
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
    issuer = bench.named(ISSUER)
    if wanted("resource-server") and issuer is not None:
        for name in (*RESOURCE_SERVERS, FLOOR):
            guarded = bench.named(name)
            if guarded is not None:
                job = partial(resource, bench, guarded)
                jobs.append(Job(f"{name} {guarded.spec.guarded_path}", job))
    if wanted("client-credentials") and issuer is not None:
        cc_runs = [(bench.ours, bench.load.cc_conns, "cc"), (issuer, bench.load.cc_conns, "cc")]
        cc_runs.append((issuer, low, "cc_low"))
        for server, conns, key in cc_runs:
            job = partial(client_credentials, bench, server, conns, key)
            jobs.append(Job(f"{server.name} cc{conns}", job))
    return jobs
