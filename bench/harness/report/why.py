"""Why the misses: what this run's own numbers show about each target that was missed."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from typing import Any

from harness.catalog import FLOOR, OURS
from harness.report.stats import cores_left, med, med_of, ms, seq, total, wrk_cores
from harness.report.targets import ERROR_KINDS, Verdicts
from harness.report.view import View
from harness.settings import MAIN

NAMES = (OURS, FLOOR, "flask-seed", "fastapi")
BOUNDS = {"flask-seed": 1.5, "fastapi": 1.5, FLOOR: 0.9}
OPTIONS_AND_PEERS = ("ours-uvicorn", "flask-seed", "fastapi")
DROPS_OF = (OURS, "ours-hypercorn-uvloop", FLOOR, "ours-granian", *OPTIONS_AND_PEERS)
TAIL_OF = (OURS, "ours-granian", "ours-uvicorn", FLOOR, "flask-seed", "fastapi")


def render(view: View, verdicts: Verdicts) -> list[str]:
    return [
        "## Why the misses (what the numbers of this run show)",
        "",
        explain(view, verdicts),
        "",
    ]


def explain(view: View, verdicts: Verdicts) -> str:
    misses = verdicts.misses
    if not misses:
        return "No target was missed in this run."
    keys = [(key, conns) for key, conns in view.connections() if view.runs(OURS, key)]
    throughput = [m for m in misses if m.startswith(("p_low:", "p_high:"))]
    out: list[str] = []
    if throughput:
        out += [_saturation(view, key, conns) for key, conns in keys]
    for key, conns in keys:
        out += [_peer_gap(view, key, conns, p) for p in BOUNDS if f"{key}:{p}" in misses]
        if f"{key}:fastest" in misses:
            out += _fastest_gap(view, key, conns, verdicts.fastest[key])
    if FLOOR in " ".join(misses) and view.runs(OURS, "health_low"):
        out.append(_breakdown(view))
    if "diag-accesslog" in view.results:
        out.append(_access_log(view))
    if throughput and len(view.options()) > 1 and "p_low" in verdicts.fastest:
        out.append(_options(view, verdicts.fastest["p_low"]))
    if any(m.startswith("p_high:") for m in misses):
        out += [_listen_drops(view), *_cold(view)]
    out += [_socket_errors(view, m.split(":", 1)[1]) for m in misses if m.startswith("errors:")]
    if "storm" in misses or "storm-rounds" in misses:
        out.append(_storm(view, "storm" in misses))
    if "logins" in misses:
        out.append(_logins(view))
    return "\n".join(out)


def _cpu(view: View, name: str, key: str) -> float:
    return view.med(name, key, "server_cpu_ms_per_req")


def _saturation(view: View, key: str, conns: int) -> str:
    names = [name for name in NAMES if view.runs(name, key)]
    cores = ", ".join(
        f"{n} {view.med(n, key, 'server_cores'):.2f} + {wrk_cores(view.runs(n, key)):.2f} + "
        f"{view.med(n, key, 'other_cores'):.2f}"
        for n in names
    )
    cpu = ", ".join(f"{n} {_cpu(view, n, key):.2f}" for n in names)
    return (
        f"- At {conns} connections, server + wrk + other load = {cores} cores (of 2): the machine "
        "was saturated, so each server's req/s follows the CPU it spends per request (srv CPU "
        f"ms/req: {cpu})."
    )


def _peer_gap(view: View, key: str, conns: int, peer: str) -> str:
    ours_cpu, peer_cpu, bound = _cpu(view, OURS, key), _cpu(view, peer, key), BOUNDS[peer]
    return (
        f"- {conns} connections, ours vs {peer}: {view.med(OURS, key):.0f} vs "
        f"{view.med(peer, key):.0f} req/s; {ours_cpu:.2f} vs {peer_cpu:.2f} ms CPU/req (inverse "
        f"ratio {peer_cpu / ours_cpu:.2f}×). Meeting {bound}× on a saturated machine needs about "
        f"{peer_cpu / bound:.2f} ms CPU/req or less."
    )


def _fastest_gap(view: View, key: str, conns: int, best: str) -> list[str]:
    best_cpu, seed_cpu = _cpu(view, best, key), _cpu(view, "flask-seed", key)
    seed_rps = view.med("flask-seed", key)
    out = [
        f"- {conns} connections, the fastest option ({best}) vs the Flask seed: "
        f"{view.med(best, key):.0f} vs {seed_rps:.0f} req/s; {best_cpu:.2f} vs {seed_cpu:.2f} ms "
        f"CPU/req (inverse ratio {seed_cpu / best_cpu:.2f}×); 3× would need about "
        f"{seed_cpu / 3:.2f} ms CPU/req."
    ]
    if view.runs("diag-floor-granian", key):
        floor_rps, floor_cpu = (
            view.med("diag-floor-granian", key),
            _cpu(view, "diag-floor-granian", key),
        )
        out.append(
            f"  The bare Quart route (no token, no database) on the same granian flags: "
            f"{floor_rps:.0f} req/s, {floor_cpu:.2f} ms CPU/req, {floor_rps / seed_rps:.2f}× the "
            f"Flask seed; ours reaches {view.med(best, key) / floor_rps:.2f}× of it."
        )
    return out


def _breakdown(view: View) -> str:
    """Where ours spends its CPU on GET /protected, by difference between the variants."""
    floor_cpu, ours_cpu = _cpu(view, FLOOR, "p_low"), _cpu(view, OURS, "p_low")
    health_cpu = _cpu(view, OURS, "health_low")
    line = (
        f"- Where ours spends its CPU at {view.load.conns_low} connections (diagnostics table): "
        f"the bare floor route {floor_cpu:.2f} ms/req; ours GET /health (the app's request hooks, "
        f"security headers and response validation, no guard) {health_cpu:.2f} ms"
    )
    if "diag-cached-user" in view.results:
        cached_cpu = _cpu(view, "diag-cached-user", "p_low")
        line += (
            "; GET /protected with the guard's user check (`Accounts.user_for`; user, session "
            f"and revocation) replaced by a dict lookup {cached_cpu:.2f} ms; the real "
            f"GET /protected {ours_cpu:.2f} ms. By difference: app middleware "
            f"{health_cpu - floor_cpu:+.2f} ms, "
            f"token decoding and the rest of the guard and route {cached_cpu - health_cpu:+.2f} "
            f"ms, the user check as the benchmarked commit does it {ours_cpu - cached_cpu:+.2f} "
            f"ms ({(ours_cpu - cached_cpu) / ours_cpu:.0%} of the request)"
        )
    needed = floor_cpu / BOUNDS[FLOOR]
    if health_cpu > needed:
        line += (
            f". Even GET /health, which has no guard, costs more than the {needed:.2f} ms/req the "
            f"{BOUNDS[FLOOR]}× floor target allows on this hypercorn config"
        )
    return line + ". Differences of a few hundredths of a ms are within the noise."


def _access_log(view: View) -> str:
    on, off = _cpu(view, "diag-accesslog", "p_low"), _cpu(view, OURS, "p_low")
    return (
        f'- Access log on (hypercorn.toml\'s `accesslog = "-"`, here into a file) vs off: {on:.2f} '
        f"vs {off:.2f} ms CPU/req, {view.med('diag-accesslog', 'p_low'):.0f} vs "
        f"{view.med(OURS, 'p_low'):.0f} req/s (per round: "
        f"{seq(view.rounds('diag-accesslog', 'p_low'), '.0f')} vs "
        f"{seq(view.rounds(OURS, 'p_low'), '.0f')}). Every other run has it off "
        "(`--access-logfile ''`)."
    )


def _options(view: View, best: str) -> str:
    separated = min(view.rounds(best, "p_low")) > max(view.rounds(OURS, "p_low"))
    cpu = ", ".join(f"{n} {_cpu(view, n, 'p_low'):.2f} ms" for n in view.options())
    return (
        f"- Server options for our service at {view.load.conns_low} connections, CPU per "
        f"request: {cpu}. {best}'s per-round req/s ({seq(view.rounds(best, 'p_low'), '.0f')}) "
        + ("are all above" if separated else "overlap with")
        + f" default hypercorn's ({seq(view.rounds(OURS, 'p_low'), '.0f')})."
    )


def backlog_text(raw: dict[str, Any]) -> str:
    if "hypercorn_backlog" not in raw:  # raw numbers from before this field: the commit's toml
        raw["hypercorn_backlog"] = _backlog_of_commit(raw.get("source", ""))
    value = raw["hypercorn_backlog"]
    if value is None:
        return "100 (hypercorn's default; the toml sets none)"
    return f"{value} (set in hypercorn.toml)"


def _backlog_of_commit(source_note: str) -> int | None:
    match = re.search(r"commit ([0-9a-f]{40})", source_note)
    if match is None:
        return None
    argv = [shutil.which("git") or "git", "-C", str(MAIN), "show", f"{match[1]}:hypercorn.toml"]
    text = subprocess.run(argv, capture_output=True, text=True, check=False).stdout  # noqa: S603
    value = tomllib.loads(text).get("backlog") if text else None
    return int(value) if value is not None else None


def _listen_drops(view: View) -> str:
    drops = {n: sum(x.get("listen_drops", 0) for x in view.runs(n, "p_high")) for n in DROPS_OF}
    tails = ", ".join(
        f"{n} {ms(view.med(n, 'p_high', 'p99_us'))} ms" for n in TAIL_OF if n in view.results
    )
    return (
        f"- At {view.load.conns_high} connections, listen-queue drops while the connections "
        "opened (all rounds): "
        + ", ".join(f"{n} {v}" for n, v in drops.items())
        + f". The hypercorn.toml servers listen with a backlog of {backlog_text(view.raw)} (a "
        "dropped SYN is retried by the client after 1 s, then 3 s, ...); the other servers use "
        f"their own defaults. p99 at this concurrency: {tails} (the floor, on the same hypercorn "
        "config and with the same drops, keeps a short tail)."
    )


def _cold(view: View) -> list[str]:
    cold_runs, cached_p99 = view.runs(OURS, "cold_high"), view.med(OURS, "p_high", "p99_us")
    failed = sum(x["status"] + x["timeout"] for x in cold_runs)
    slow = bool(cold_runs) and med_of(cold_runs, "p99_us") > 2 * cached_p99
    if not cold_runs or not (failed > 0 or slow):
        return []
    return [
        f"- First use of a token at {view.load.conns_high} connections (section above): p99 "
        f"{ms(med_of(cold_runs, 'p99_us'))} ms, {total(cold_runs, 'status')} non-2xx and "
        f"{total(cold_runs, 'timeout')} timeouts over the rounds, against p99 {ms(cached_p99)} "
        "ms with a cached token, while the CPU per request barely moved "
        f"({med_of(cold_runs, 'server_cpu_ms_per_req'):.2f} vs {_cpu(view, OURS, 'p_high'):.2f} "
        "ms): the extra seconds are waiting, not work. In the benchmarked code a cache miss reads "
        "the database; concurrent misses for one token share one load, but every new token runs "
        "its own query on a per-process pool of AUTH_DB_POOL_SIZE 10 + 10 overflow "
        "connections; this run measured the resulting tail, not where each request waited."
    ]


def _socket_errors(view: View, name: str) -> str:
    runs = view.runs(name, "p_high")
    kinds = {kind: total(runs, kind) for kind in ERROR_KINDS}
    return (
        f"- Socket errors on {name} at {view.load.conns_high} connections: {kinds} (wrk "
        f"--timeout {view.load.wrk_timeout}s); see the server log in bench/out/."
    )


def _storm(view: View, missed: bool) -> str:
    during, before = view.runs(OURS, "storm_during"), view.runs(OURS, "storm_before")
    logins = view.runs(OURS, "storm_logins")
    head = (
        "- Login storm (missed)"
        if missed
        else "- Login storm (the median verdict passes, but most rounds on their own exceed 3×)"
    )
    login_rate = med_of(logins, "ok_rps")
    hash_cpu = view.hashing.hash_cpu
    argon2 = (
        f", about {login_rate * hash_cpu:.2f} cores of argon2 at the measured CPU per hash"
        if hash_cpu == hash_cpu  # NaN when this run did not measure the hash (ONLY= without it)
        else ""
    )
    return (
        f"{head}: /protected went from {med_of(before, 'rps'):.0f} to {med_of(during, 'rps'):.0f} "
        f"req/s and its p50 from {ms(med_of(before, 'p50_us'))} to {ms(med_of(during, 'p50_us'))} "
        f"ms while {login_rate:.1f} logins/s went through{argon2}; "
        f"the server used {med_of(during, 'server_cores'):.2f} cores and other processes "
        f"{med_of(during, 'other_cores'):.2f}. The hashing runs in thread pools inside the same 2 "
        "worker processes that serve /protected (AUTH_HASH_WORKERS defaults to the core count "
        "per process, so up to 4 hashes at once here), so logins and the event loops share the "
        f"same 2 cores. The logins themselves waited: p50 {ms(med_of(logins, 'p50_us'))} ms, "
        f"{total(logins, 'socket_errors')} timed out after {view.load.wrk_timeout} s."
    )


def _logins(view: View) -> str:
    runs, hashing = view.runs(OURS, "logins"), view.hashing
    free = med(cores_left(r, view.load.cores) for r in runs)
    rate = med_of(runs, "ok_rps")
    line = (
        f"- Logins: {rate:.2f}/s against a limit of {hashing.limit:.2f}/s. The server spent "
        f"{med_of(runs, 'server_cpu_ms_per_req') / 1000:.3f} CPU s per login (a verify alone: "
        f"{hashing.verify_cpu:.3f} CPU s, {med(h['verify_wall_s'] for h in view.hashes):.3f} s "
        f"wall) and used {med_of(runs, 'server_cores'):.2f} cores, while other processes used "
        f"{med_of(runs, 'other_cores'):.2f} cores; the limit counts both cores as free for "
        f"hashing. Against the cores that were left ({free:.2f}), the hashing rate would be "
        f"{free / hashing.hash_cpu:.2f}/s and the service reached "
        f"{rate / (free / hashing.hash_cpu):.2f}× that."
    )
    if runs:
        quiet = min(runs, key=lambda x: x["other_cores"])
        line += (
            f" In the round with the least other load ({quiet['other_cores']:.2f} cores) it did "
            f"{quiet['ok_rps']:.2f} logins/s = {quiet['ok_rps'] / hashing.limit:.2f}× the limit."
        )
    return line
