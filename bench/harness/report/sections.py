"""The report's tables: /protected per server, the login storm, the cold token, logins against
the hashing limit, memory, the diagnostics of GET /protected and the restarts."""

from __future__ import annotations

from harness.catalog import FLOOR, OURS
from harness.report.stats import cores_left, med, med_of, ms, over2s, seq, total, wrk_cores
from harness.report.view import View
from harness.wrk import Run

ERRORS = ("connect", "read", "write", "timeout")


def protected_tables(view: View) -> list[str]:
    load, names = view.load, view.main_names()
    return [
        *_protected_table(view, "p_low", f"GET /protected at {load.conns_low} connections", names),
        *_protected_table(
            view, "p_high", f"GET /protected at {load.conns_high} connections", names
        ),
    ]


def _protected_table(view: View, key: str, title: str, names: list[str]) -> list[str]:
    if not any(view.runs(name, key) for name in names):
        return []
    lines = [
        f"## {title}",
        "",
        "*listen drops*: the kernel's TcpExt ListenDrops counter summed over the rounds "
        "(system-wide, so it counts any process's full listen queue; only this load ran from the "
        "benchmark meanwhile). *> 2 s %*: share of the responses slower than 2 s (wrk's default "
        f"timeout; this run used --timeout {view.load.wrk_timeout}s), median over rounds.",
        "",
        "| server | median req/s | p50 ms | p99 ms | socket errors (c/r/w/t) | non-2xx "
        "| listen drops | > 2 s % | srv CPU ms/req | srv cores | wrk cores | other load (cores) "
        "| req/s per round |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name in names:
        runs = view.runs(name, key)
        if runs:
            lines.append(_protected_row(name, runs))
    return [*lines, ""]


def _protected_row(name: str, runs: list[Run]) -> str:
    errors = "/".join(str(total(runs, kind)) for kind in ERRORS)
    drops = sum(r.get("listen_drops", 0) for r in runs)
    return (
        f"| {name} | {med_of(runs, 'rps'):.0f} | {ms(med_of(runs, 'p50_us'))} "
        f"| {ms(med_of(runs, 'p99_us'))} | {errors} | {total(runs, 'status')} | {drops} "
        f"| {over2s(runs)} | {med_of(runs, 'server_cpu_ms_per_req'):.2f} "
        f"| {med_of(runs, 'server_cores'):.2f} | {wrk_cores(runs):.2f} "
        f"| {med_of(runs, 'other_cores'):.2f} | {seq([r['rps'] for r in runs], '.0f')} |"
    )


def storm(view: View) -> list[str]:
    if not view.runs(OURS, "storm_during"):
        return []
    load = view.load
    lines = [
        "## Login storm (ours, default hypercorn)",
        "",
        f"/protected at {load.storm_conns} connections alone (*before*), then again while "
        f"{load.storm_logins} connections post logins in a loop (*during*; the login load starts "
        "1.5 s earlier and ends after).",
        "",
        "| phase | median req/s | p50 ms | p99 ms | max ms | socket errors | non-2xx "
        "| per-round p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    phases = (
        ("storm_before", "/protected before"),
        ("storm_during", "/protected during"),
        ("storm_logins", "POST /login during"),
    )
    for key, label in phases:
        runs = view.runs(OURS, key)
        rate = med_of(runs, "ok_rps" if key == "storm_logins" else "rps")
        lines.append(
            f"| {label} | {rate:.1f} | {ms(med_of(runs, 'p50_us'))} | "
            f"{ms(med_of(runs, 'p99_us'))} | {ms(med_of(runs, 'max_us'))} | "
            f"{total(runs, 'socket_errors')} | {total(runs, 'status')} | "
            f"{', '.join(ms(r['p99_us']) for r in runs)} |"
        )
    return [*lines, ""]


def cold_token(view: View) -> list[str]:
    cold_runs = view.runs(OURS, "cold_high")
    if not cold_runs:
        return []
    high, ttl = view.load.conns_high, view.raw.get("cache_ttl")
    expiry = (
        f"; the benchmarked code also drops a cached token {ttl:.0f} s after it was loaded "
        "(`SubjectCache` ttl), after which the next requests take the same path"
        if ttl
        else ""
    )
    lines = [
        f"## First use of a token under load (ours, default hypercorn, {high} connections)",
        "",
        "Before every other run of our service, the benchmark logs in for a new token and sends "
        "one unmeasured second of requests with it from 8 connections, so each worker has it "
        f"cached and fresh. Here the run logs in and immediately opens {high} connections with "
        f"the new token, so every worker meets it first under load{expiry}.",
        "",
        "| token | median req/s | p50 ms | p99 ms | max ms | > 2 s % | non-2xx | timeouts "
        "| srv CPU ms/req | p99 per round |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, runs in (
        ("already cached (the table above)", view.runs(OURS, "p_high")),
        ("new, first use", cold_runs),
    ):
        lines.append(
            f"| {label} | {med_of(runs, 'rps'):.0f} | {ms(med_of(runs, 'p50_us'))} "
            f"| {ms(med_of(runs, 'p99_us'))} | {ms(med_of(runs, 'max_us'))} | {over2s(runs)} "
            f"| {total(runs, 'status')} | {total(runs, 'timeout')} "
            f"| {med_of(runs, 'server_cpu_ms_per_req'):.2f} "
            f"| {seq([r['p99_us'] / 1000 for r in runs], '.0f')} |"
        )
    counts = view.raw.get("log_counts", {}).get(OURS, {})
    if counts:
        lines += [
            "",
            f"The server log of ours-hypercorn holds {counts.get('database unavailable', 0)} "
            '"database unavailable ..." lines (the service\'s 503 SERVICE_UNAVAILABLE for a '
            f"database error or timeout) and {counts.get('Traceback', 0)} tracebacks over the "
            "whole run.",
        ]
    return [*lines, ""]


def logins(view: View) -> list[str]:
    runs = view.runs(OURS, "logins")
    if not runs or not view.hashes:
        return []
    h0, hashing, load = view.hashes[0], view.hashing, view.load
    lines = [
        "## Logins per second against the hashing limit (ours, default hypercorn)",
        "",
        f"argon2id with the service's defaults (memory {h0.get('memory_kib')} KiB, "
        f"t={h0.get('time_cost')}, p={h0.get('parallelism')}), hashed in-process with "
        "`PasswordHasher` of the benchmarked code, 4 hashes and 4 verifications per round, "
        "`time.process_time`:",
        "",
        "| measure | median | per round |",
        "| --- | ---: | --- |",
    ]
    for key, label in (
        ("hash_cpu_s", "CPU s per hash"),
        ("hash_wall_s", "wall s per hash"),
        ("verify_cpu_s", "CPU s per verify (what a login does)"),
        ("verify_wall_s", "wall s per verify"),
    ):
        values = [h[key] for h in view.hashes]
        lines.append(f"| {label} | {med(values):.3f} | {seq(values, '.3f')} |")
    free = [cores_left(r, load.cores) for r in runs]
    lines += [
        f"| hashing limit = {load.cores} cores ÷ CPU s per hash | {hashing.limit:.2f}/s | |",
        f"| (same with CPU s per verify) | {load.cores / hashing.verify_cpu:.2f}/s | |",
        f"| logins/s measured (200s only), {load.login_conns} connections "
        f"| {hashing.login_rate:.2f} | {seq([r['ok_rps'] for r in runs], '.2f')} |",
        f"| login p50 / p99 ms | {ms(med_of(runs, 'p50_us'))} / {ms(med_of(runs, 'p99_us'))} | |",
        f"| server CPU during the login runs (cores) | {med_of(runs, 'server_cores'):.2f} "
        f"| {seq([r['server_cores'] for r in runs], '.2f')} |",
        f"| server CPU s per login | {med_of(runs, 'server_cpu_ms_per_req') / 1000:.3f} | |",
        f"| other load during the login runs (cores) | {med_of(runs, 'other_cores'):.2f} "
        f"| {seq([r['other_cores'] for r in runs], '.2f')} |",
        f"| non-2xx / socket errors | {total(runs, 'status')} / {total(runs, 'socket_errors')} | |",
        f"| (for reference, not the target) cores left to the server = {load.cores} − other load "
        f"− wrk; ÷ CPU s per hash | {med(free) / hashing.hash_cpu:.2f}/s "
        f"| {seq([f / hashing.hash_cpu for f in free], '.2f')} |",
        "",
    ]
    return lines


def memory(view: View) -> list[str]:
    lines = [
        "## Peak RSS per process",
        "",
        "`VmHWM` of every process of each server (the master and the workers it forked/spawned; "
        "multiprocessing's resource tracker left out), read at the end of the run, so the peak "
        "over the whole run. Our default-hypercorn server also served the login measures (argon2: "
        "64 MiB per hash in progress).",
        "",
        "| server | master MiB | worker peak MiB (each) | worker RSS now MiB (each) |",
        "| --- | ---: | --- | --- |",
    ]
    for name, rows in view.raw["memory"].items():
        master = [r for r in rows if r["role"] == "master"]
        workers = [r for r in rows if r["role"] == "worker"]
        lines.append(
            f"| {name} | {(master[0]['hwm_kib'] or 0) / 1024:.0f} | "
            f"{seq([(r['hwm_kib'] or 0) / 1024 for r in workers], '.0f')} | "
            f"{seq([(r['rss_kib'] or 0) / 1024 for r in workers], '.0f')} |"
        )
    return [*lines, ""]


DIAGNOSTIC_ROWS = (
    ("floor: bare Quart route", FLOOR, "p_low"),
    ("ours GET /health (the app's middleware, no guard, no database)", OURS, "health_low"),
    (
        "ours GET /protected with the user check replaced by a dict lookup (diagnostic only)",
        "diag-cached-user",
        "p_low",
    ),
    ("ours GET /protected (as benchmarked above)", OURS, "p_low"),
    ("ours GET /protected, access log on (hypercorn.toml as is)", "diag-accesslog", "p_low"),
    (
        "ours GET /protected, AUTH_DB_POOL_SIZE=40 (no pool overflow at this concurrency)",
        "diag-pool40",
        "p_low",
    ),
    (
        "floor: bare Quart route on granian (the fastest option's ceiling for a Quart app)",
        "diag-floor-granian",
        "p_low",
    ),
    (
        "ours GET /protected on hypercorn's own --workers 2 (one shared listening socket)",
        "diag-hypercorn-shared",
        "p_low",
    ),
)


def diagnostics(view: View) -> list[str]:
    if not any(s["group"] == "diag" for s in view.servers.values()):
        return []
    load = view.load
    lines = [
        "## Diagnostics: where the time of GET /protected goes (ours, hypercorn, "
        f"{load.conns_low} connections)",
        "",
        "| variant | median req/s | vs ours /protected | p99 ms | srv CPU ms/req "
        "| req/s per round | server cores busy per round |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    base = view.med(OURS, "p_low")
    for label, name, key in DIAGNOSTIC_ROWS:
        runs = view.runs(name, key)
        if runs:
            lines.append(
                f"| {label} | {med_of(runs, 'rps'):.0f} | {med_of(runs, 'rps') / base:.2f}× | "
                f"{ms(med_of(runs, 'p99_us'))} | {med_of(runs, 'server_cpu_ms_per_req'):.2f} | "
                f"{seq([r['rps'] for r in runs], '.0f')} | "
                f"{seq([r['server_cores'] for r in runs], '.2f')} |"
            )
    lines += [
        "",
        f"*server cores busy*: the CPU the server's processes used per second of the run, out of "
        f"{load.cores}; a run well under the others was not CPU-bound (for instance one worker "
        "holding most connections).",
        "",
        "Each variant is its own server process group, measured in the same interleaved rounds. "
        "*srv CPU ms/req* is the steadier measure on a shared machine: req/s also moves with what "
        "other processes take.",
        "",
    ]
    return lines


def restarts(view: View) -> list[str]:
    counts = view.raw.get("restarts", {})
    if not any(counts.values()):
        return []
    return [
        "**Restarts**: "
        + ", ".join(f"{name} {n}×" for name, n in counts.items() if n)
        + " (a server or one of its workers was found gone before a job, so it was restarted; "
        "see its log in bench/out/).",
        "",
    ]
