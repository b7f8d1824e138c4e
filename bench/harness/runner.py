"""A whole run: snapshots, servers up, interleaved rounds of jobs, raw.json and the report."""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import catalog, report, scenarios, source
from harness.log import log
from harness.server import Server, SetupFailed
from harness.settings import OUT, Settings
from harness.source import Source
from harness.wrk import Wrk


def run(settings: Settings) -> int:
    scenarios.check(settings.only)
    started, load_start = time.time(), os.getloadavg()
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "wrk").mkdir(parents=True)
    tmp = Path(tempfile.mkdtemp(prefix="authbench-"))
    load = settings.load
    log(
        f"rounds={load.rounds} duration={load.duration}s warmup={load.warmup}s "
        f"connections={load.conns_low}/{load.conns_high} temp={tmp}"
    )
    head, base = _sources(settings, tmp)
    specs = catalog.build(settings, tmp, secrets.token_urlsafe(48), head, base)
    wrk = Wrk.for_load(load, OUT / "wrk")
    servers = [Server(spec, settings.bin_dir, OUT, wrk) for spec in specs]
    bench = scenarios.Bench(load, wrk, settings.python, head, servers)
    try:
        skipped = _set_up(bench)
        _warm_up(bench)
        _rounds(bench, scenarios.plan(bench, settings.only, settings.diag))
        state = _final_state(bench.servers)
    finally:
        for server in servers:
            server.stop()
    raw = _raw(settings, bench, base, started, load_start)
    _write({**raw, **state, "skipped": skipped}, settings.results)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _raw(
    settings: Settings,
    bench: scenarios.Bench,
    base: Source | None,
    started: float,
    load_start: tuple[float, float, float],
) -> dict[str, Any]:
    """What raw.json keeps of the run (the report is rendered from it alone)."""
    raw: dict[str, Any] = {
        "config": settings.load.as_dict(),
        "started": started,
        "finished": time.time(),
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "source": bench.head.note,
        "servers": [server.spec.as_dict() for server in bench.servers],
        "results": bench.results,
        "hashes": bench.hashes,
        "cache_ttl": source.cache_ttl(settings.python, bench.head),
        "hypercorn_backlog": source.hypercorn_backlog(bench.head),
        "filters": {"only": sorted(settings.only), "servers": sorted(settings.servers)},
    }
    if base is not None:
        raw["baseline"] = {"label": base.label, "commit": base.commit, "note": base.note}
    return raw


def _sources(settings: Settings, tmp: Path) -> tuple[Source, Source | None]:
    head = source.head(settings.source, tmp)
    log(f"service source: {head.note}")
    base = source.baseline(settings.baseline, tmp) if settings.baseline else None
    if base is not None:
        log(f"baseline source: {base.note}")
    source.install_dependencies(settings.python, [head, *([base] if base else [])], OUT)
    return head, base


def _set_up(bench: scenarios.Bench) -> dict[str, str]:
    """Set up and start every server; an optional one whose set-up failed is left out (why)."""
    skipped: dict[str, str] = {}
    for server in list(bench.servers):
        log(f"setting up {server.name}")
        try:
            server.prepare()
        except SetupFailed as exc:
            if not server.spec.optional:
                raise
            log(f"!! {server.name} left out: {exc}")
            skipped[server.name] = str(exc).strip().splitlines()[-1]
            bench.servers.remove(server)
            continue
        server.start()
    bench.results = {server.name: {} for server in bench.servers}
    return skipped


def _warm_up(bench: scenarios.Bench) -> None:
    load = bench.load
    for server in bench.servers:
        server.wait_ready()
        server.login()
        log(f"{server.name} ready on {server.base}; warming up {load.warmup}s")
        url = server.base + server.spec.guarded_path
        token = (bench.token_for(server) if server.spec.token_from else server.token) or None
        bench.wrk.run(bench.wrk.argv(url, load.conns_low, load.warmup, "report.lua", token))
        server.settle()


def _rounds(bench: scenarios.Bench, jobs: list[scenarios.Job]) -> None:
    rounds = bench.load.rounds
    for round_no in range(1, rounds + 1):
        order = jobs[:]
        random.Random(round_no).shuffle(order)  # noqa: S311 (an order, not a secret)
        log(f"round {round_no}/{rounds}: " + ", ".join(job.name for job in order))
        for server in bench.servers:
            server.login()  # a fresh token each round (access tokens live 15 minutes)
        for job in order:
            job.run()


def _final_state(servers: list[Server]) -> dict[str, Any]:
    return {
        "memory": {server.name: server.memory() for server in servers},
        "restarts": {server.name: server.restarts for server in servers},
        "log_counts": {server.name: server.log_counts() for server in servers},
    }


def _write(raw: dict[str, Any], results: Path) -> None:
    (OUT / "raw.json").write_text(json.dumps(raw, indent=1))
    results.write_text(report.render(raw))
    minutes = (raw["finished"] - raw["started"]) / 60
    log(f"done in {minutes:.1f} min: {results}")
