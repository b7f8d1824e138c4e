"""The report's sections for other projects' use of the service: a resource server's guarded
route against the floor, and client-credentials token issuance beside the password login."""

from __future__ import annotations

from harness.catalog import FLOOR, ISSUER, OURS, RS_JWKS, RS_REDIS
from harness.report.stats import med, med_of, ms, seq, total
from harness.report.view import View
from harness.wrk import Run

RESOURCE_ROWS = (
    (RS_REDIS, "resource server, JWKS + revocation feed (Redis MGET)", "GET /stock"),
    (RS_JWKS, "resource server, JWKS only (no Redis)", "GET /stock"),
    (FLOOR, "floor: bare Quart route", "GET /protected"),
)


def _cpu_us(run: Run) -> float:
    """Server CPU µs per answer that was a 2xx (every answer when none failed)."""
    ok: int = run["requests"] - run["status"]
    cpu: float = run["server_cpu_s"]
    return 1e6 * cpu / max(ok, 1)


def _redis_us(runs: list[Run]) -> str:
    values = [
        1e6 * r["redis_cpu_s"] / max(r["requests"], 1)
        for r in runs
        if r.get("redis_cpu_s") is not None
    ]
    return f"{med(values):.0f}" if values else "n/a"


def resource_server(view: View) -> list[str]:
    floor = view.runs(FLOOR, "rs_low")
    if not any(view.runs(name, "rs_low") for name in (RS_REDIS, RS_JWKS)):
        return []
    conns = view.load.conns_low
    lines = [
        f"## Resource server: a guarded route with a known token, against the floor ({conns} "
        "connections)",
        "",
        f"`{ISSUER}` (our service as the README serves it, signing with an ES256 key made by "
        "`python -m service keys generate --algorithm ES256`, with AUTH_REDIS_URL) issues the "
        "token: the benchmark logs in there once per round. `examples/resource_server` "
        "(`AuthExtension(app)` in resource-server mode: AUTH_JWKS_URL of that service, the JWKS "
        "fetched once and cached) serves `GET /stock` (`@token_required`) on the floor's server "
        "settings (python -m service.serve, hypercorn.toml, 2 workers, access log off): "
        f"`{RS_REDIS}` also shares the service's AUTH_REDIS_URL and AUTH_REDIS_PREFIX, so each "
        "request reads the revocation feed with one MGET (the contract's immediate-revocation "
        f"set-up); `{RS_JWKS}` has no Redis (a revocation reaches it only when the token "
        "expires). Before each measured run the token is sent for one unmeasured second from 8 "
        "connections, so every worker has fetched the keys and met the token. The floor's "
        "`GET /protected` gets the same `Authorization` header (it ignores it). All three are "
        "separate jobs of the same interleaved rounds.",
        "",
        "*÷ floor*: req/s divided by the floor's (from the medians, and inside each round); "
        "*CPU ÷ floor*: the server's CPU µs per request divided by the floor's, which moves less "
        "with the other load. *redis CPU*: the whole redis-server process's CPU µs per request "
        "during the run; other work on this machine shares that Redis, so the floor's and "
        f"`{RS_JWKS}`'s column (no request of theirs touches Redis) is that background.",
        "",
        "| server | route | median req/s | ÷ floor | ÷ floor per round | srv CPU µs/req "
        "| CPU ÷ floor | CPU ÷ floor per round | p50 ms | p99 ms | non-2xx | socket errors "
        "| redis CPU µs/req | other load (cores) | req/s per round |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: "
        "| ---: | --- |",
    ]
    for name, label, route in RESOURCE_ROWS:
        runs = view.runs(name, "rs_low")
        if runs:
            lines.append(_resource_row(view, name, label, route, runs, floor))
    lines += ["", *_feed_cost(view), ""]
    return lines


def _resource_row(
    view: View, name: str, label: str, route: str, runs: list[Run], floor: list[Run]
) -> str:
    rate, cpu = med_of(runs, "rps"), med(_cpu_us(r) for r in runs)
    if floor:
        ratio = f"{rate / med_of(floor, 'rps'):.2f}×"
        ratios = seq(view.per_round(name, FLOOR, "rs_low"), ".2f")
        cpu_ratio = f"{cpu / med(_cpu_us(r) for r in floor):.2f}×"
        cpu_ratios = seq(
            (_cpu_us(a) / _cpu_us(b) for a, b in zip(runs, floor, strict=False)), ".2f"
        )
    else:
        ratio = ratios = cpu_ratio = cpu_ratios = "n/a (no floor run)"
    return (
        f"| {name}: {label} | {route} | {rate:.0f} | {ratio} | {ratios} | {cpu:.0f} "
        f"| {cpu_ratio} | {cpu_ratios} | {ms(med_of(runs, 'p50_us'))} "
        f"| {ms(med_of(runs, 'p99_us'))} | {total(runs, 'status')} "
        f"| {total(runs, 'socket_errors')} | {_redis_us(runs)} | {med_of(runs, 'other_cores'):.2f} "
        f"| {seq([r['rps'] for r in runs], '.0f')} |"
    )


def _feed_cost(view: View) -> list[str]:
    with_feed, without = view.runs(RS_REDIS, "rs_low"), view.runs(RS_JWKS, "rs_low")
    if not with_feed or not without:
        return []
    rates = view.per_round(RS_REDIS, RS_JWKS, "rs_low")
    cpu = [_cpu_us(a) / _cpu_us(b) for a, b in zip(with_feed, without, strict=False)]
    extra = [_cpu_us(a) - _cpu_us(b) for a, b in zip(with_feed, without, strict=False)]
    return [
        f"What the revocation feed costs, {RS_REDIS} ÷ {RS_JWKS} inside each round: req/s "
        f"{seq(rates, '.2f')} (median {med(rates):.2f}×), server CPU per request "
        f"{seq(cpu, '.2f')} (median {med(cpu):.2f}×, {med(extra):+.0f} µs), the Redis side "
        "not counted (the *redis CPU* column)."
    ]


CC_ROWS = (
    (OURS, "cc", "ours-hypercorn (HS256, throttle windows in each worker's memory)"),
    (ISSUER, "cc", f"{ISSUER} (ES256, throttle windows in Redis, shared by the workers)"),
    (ISSUER, "cc_low", f"{ISSUER} (ES256, throttle windows in Redis, shared by the workers)"),
)


def client_credentials(view: View) -> list[str]:
    if not any(view.runs(name, key) for name, key, _ in CC_ROWS):
        return []
    load = view.load
    conns = {"cc": load.cc_conns, "cc_low": load.conns_low}
    lines = [
        "## Client-credentials token issuance (POST /token, grant_type=client_credentials)",
        "",
        "A machine client made with `python -m service clients create bench-client --scope "
        "bench:read` (the service's AUTH_* environment), then wrk posting "
        "`grant_type=client_credentials` (`application/x-www-form-urlencoded`) with "
        "`Authorization: Basic base64(client_id:client_secret)` (bench/wrk/"
        "client_credentials.lua, which counts the 429s apart). The secret is checked by SHA-256 "
        "(no password hash) and the answer is an access token only. *tokens/s*: 200 answers per "
        "second; *srv CPU µs per 200*: the server's CPU per 200 answer (per token, per login). "
        "The password login (argon2id, bench/wrk/login.lua) is measured on ours-hypercorn in "
        "the same rounds when the logins scenario runs.",
        "",
        "| server | grant | connections | median tokens/s | answers/s (all) | non-2xx | of which "
        "429 | p50 ms | p99 ms | srv CPU µs per 200 | srv cores | other load (cores) "
        "| tokens/s per round |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, key, label in CC_ROWS:
        runs = view.runs(name, key)
        if runs:
            lines.append(_cc_row(label, "client_credentials", conns[key], runs))
    logins = view.runs(OURS, "logins")
    if logins:
        label = "ours-hypercorn (HS256), POST /login"
        lines.append(_cc_row(label, "password (argon2id)", load.login_conns, logins))
    lines += ["", *_against_logins(view), *_throttled(view, conns), ""]
    return lines


def _cc_row(label: str, grant: str, conns: int, runs: list[Run]) -> str:
    too_many = sum(r.get("status_429", 0) for r in runs)
    shown_429 = str(too_many) if all("status_429" in r for r in runs) else "n/a"
    return (
        f"| {label} | {grant} | {conns} | {med_of(runs, 'ok_rps'):.1f} "
        f"| {med_of(runs, 'rps'):.1f} | {total(runs, 'status')} | {shown_429} "
        f"| {ms(med_of(runs, 'p50_us'))} | {ms(med_of(runs, 'p99_us'))} "
        f"| {med(_cpu_us(r) for r in runs):.0f} | {med_of(runs, 'server_cores'):.2f} "
        f"| {med_of(runs, 'other_cores'):.2f} | {seq([r['ok_rps'] for r in runs], '.1f')} |"
    )


def _against_logins(view: View) -> list[str]:
    cc, logins = view.runs(OURS, "cc"), view.runs(OURS, "logins")
    if not cc or not logins:
        return []
    rates = [a["ok_rps"] / b["ok_rps"] for a, b in zip(cc, logins, strict=False) if b["ok_rps"]]
    cpu = [_cpu_us(b) / _cpu_us(a) for a, b in zip(cc, logins, strict=False)]
    return [
        "Client credentials against the password login on ours-hypercorn, inside each round: "
        f"tokens/s ÷ logins/s {seq(rates, '.0f')} (median {med(rates):.0f}×); server CPU per "
        f"login ÷ per client-credentials token {seq(cpu, '.0f')} (median {med(cpu):.0f}×). "
        f"(The connection counts differ: {view.load.login_conns} for logins, which saturate "
        f"the cores with argon2, {view.load.cc_conns} for client credentials.)",
        "",
    ]


def _audit(view: View) -> str:
    """What the servers' audit lines say of client authentication over the whole run."""
    counts = view.raw.get("log_counts", {})
    parts = [
        f"{name} {c['client-auth failed']} failed and {c['client-auth throttled']} throttled"
        for name in (OURS, ISSUER)
        if "client-auth failed" in (c := counts.get(name, {}))
    ]
    if not parts:
        return ""
    return "; the servers' audit lines of client authentication over the whole run: " + ", ".join(
        parts
    )


def _throttled(view: View, conns: dict[str, int]) -> list[str]:
    rows = [(name, key) for name, key, _ in CC_ROWS if view.runs(name, key)]
    hit = [
        f"{name} at {conns[key]} connections: {sum(r.get('status_429', 0) for r in runs)} of "
        f"{sum(r['requests'] for r in runs)} answers"
        for name, key in rows
        if (runs := view.runs(name, key)) and sum(r.get("status_429", 0) for r in runs)
    ]
    if not hit:
        return ["No client-credentials request was answered 429 in this run.", ""]
    return [
        "**429 Too Many Attempts for correct credentials** ("
        + "; ".join(hit)
        + "). Every one of these requests carried the right client_id and secret"
        + _audit(view)
        + ". The cause is in the "
        "service's throttle (service/accounts/throttle.py, `Throttle.attempting`, used by "
        "`MachineClients.authenticate` in service/accounts/clients.py): each attempt *reserves* "
        "a place in the address windows (AUTH_THROTTLE_IP_LIMITS, by default 30/minute) before "
        "the secret is checked and gives it back only after the success, so more than 30 "
        "attempts in flight at once from one address are refused although none failed. With "
        "the windows in Redis the limit is shared by all workers; in memory, each worker has its "
        "own 30. Not changed here (the service is others' work): reported with these numbers.",
        "",
    ]
