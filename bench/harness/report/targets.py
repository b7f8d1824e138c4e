"""The targets: each one's value, verdict and per-round values; the misses that why.py explains."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from harness.catalog import FLOOR, FLOOR_GRANIAN, GRANIAN, OURS, PG_REDIS
from harness.report.stats import med, med_of, ms, seq, total, verdict
from harness.report.view import View

# (peer, its name in a target, the ratio ours must reach)
PEERS = (
    ("flask-seed", "Flask seed", 1.5),
    ("fastapi", "FastAPI peer", 1.5),
    (FLOOR, "the floor (bare Quart)", 0.9),
)
FLOOR_BOUND = 0.9  # issue 15: ours at least 0.9 times the floor on every supported server
FASTEST_BOUND = 3.0
STORM_BOUND = 3.0
LOGIN_BOUND = 0.8
ERROR_KINDS = ("connect", "read", "write", "timeout")


@dataclass(frozen=True)
class Target:
    name: str
    value: str
    measured: str
    ok: bool
    rounds: list[float]  # the same measure inside each round
    meets: Callable[[float], bool]
    spec: str  # the format of the per-round values


@dataclass
class Verdicts:
    targets: list[Target] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)  # tags: "p_low:flask-seed", "storm", ...
    fastest: dict[str, str] = field(default_factory=dict)  # scenario key -> fastest option

    def add(self, target: Target, miss: str) -> None:
        self.targets.append(target)
        if not target.ok:
            self.misses.append(miss)


def at_least(bound: float) -> Callable[[float], bool]:
    return lambda value: value >= bound


def at_most(bound: float) -> Callable[[float], bool]:
    return lambda value: value <= bound


def evaluate(view: View) -> Verdicts:
    verdicts = Verdicts()
    for key, conns in view.connections():
        if view.runs(OURS, key):
            _throughput(view, verdicts, key, conns)
    if view.runs(OURS, "p_high"):
        for name in dict.fromkeys([OURS, verdicts.fastest["p_high"]]):
            verdicts.add(_no_errors(view, name), f"errors:{name}")
    if view.runs(OURS, "storm_during"):
        _storm(view, verdicts)
    if view.hashes and view.runs(OURS, "logins"):
        verdicts.add(_logins(view), "logins")
    return verdicts


def _ratio(view: View, name: str, a: str, b: str, bound: float, key: str) -> Target:
    """The target that ``a``'s req/s be at least ``bound`` times ``b``'s."""
    rate_a, rate_b = view.med(a, key), view.med(b, key)
    return Target(
        name,
        f"{rate_a / rate_b:.2f}×",
        f"{rate_a:.0f} vs {rate_b:.0f} req/s",
        rate_a / rate_b >= bound,
        view.per_round(a, b, key),
        at_least(bound),
        ".2f",
    )


def _throughput(view: View, verdicts: Verdicts, key: str, conns: int) -> None:
    for peer, label, bound in PEERS:
        if view.runs(peer, key):
            name = f"/protected @{conns}: ours (default hypercorn) ≥ {bound}× {label}"
            verdicts.add(_ratio(view, name, OURS, peer, bound, key), f"{key}:{peer}")
    if view.runs(GRANIAN, key) and view.runs(FLOOR_GRANIAN, key):
        name = (
            f"/protected @{conns}: ours on granian ≥ {FLOOR_BOUND}× the floor (bare Quart) on "
            "granian"
        )
        target = _ratio(view, name, GRANIAN, FLOOR_GRANIAN, FLOOR_BOUND, key)
        verdicts.add(target, f"{key}:{FLOOR_GRANIAN}")
    options = [name for name in view.options() if view.runs(name, key)]
    best = verdicts.fastest[key] = max(options, key=lambda name: view.med(name, key))
    if view.runs("flask-seed", key):
        name = f"/protected @{conns}: ours on the fastest option ({best}) ≥ 3× Flask seed"
        target = _ratio(view, name, best, "flask-seed", FASTEST_BOUND, key)
        verdicts.add(target, f"{key}:fastest")


def _no_errors(view: View, name: str) -> Target:
    runs, timeout = view.runs(name, "p_high"), view.load.wrk_timeout
    errors = total(runs, "socket_errors")
    detail = ", ".join(f"{kind} {total(runs, kind)}" for kind in ERROR_KINDS)
    slow = [100 - r["within_2s_pct"] for r in runs if "within_2s_pct" in r]
    if slow:
        detail += (
            f"; with wrk --timeout {timeout}s. {med(slow):.0f}% of the responses (median over "
            "rounds) took over 2 s, wrk's default timeout, under which they would have counted as "
            "timeout errors"
        )
    return Target(
        f"0 socket errors @{view.load.conns_high}: {name}",
        str(errors),
        f"all rounds: {detail}",
        errors == 0,
        [float(r["socket_errors"]) for r in runs],
        lambda value: value == 0,
        ".0f",
    )


def _storm(view: View, verdicts: Verdicts) -> None:
    before_runs, during_runs = view.runs(OURS, "storm_before"), view.runs(OURS, "storm_during")
    before, during = med_of(before_runs, "p99_us"), med_of(during_runs, "p99_us")
    pairs = zip(before_runs, during_runs, strict=False)
    per = [d["p99_us"] / b["p99_us"] for b, d in pairs]
    target = Target(
        f"login storm: /protected p99 during ≤ {STORM_BOUND:g}× before (ours, default hypercorn)",
        f"{during / before:.2f}×",
        f"p99 {ms(during)} ms during vs {ms(before)} ms before (medians)",
        during / before <= STORM_BOUND,
        per,
        at_most(STORM_BOUND),
        ".2f",
    )
    verdicts.add(target, "storm")
    if sum(v > STORM_BOUND for v in per) * 2 > len(per):
        verdicts.misses.append("storm-rounds")


def _logins(view: View) -> Target:
    hashing, cores = view.hashing, view.load.cores
    ratio = hashing.login_rate / hashing.limit
    return Target(
        f"logins/s ≥ {LOGIN_BOUND}× hashing limit ({cores} cores ÷ {hashing.hash_cpu:.3f} CPU s "
        f"per hash = {hashing.limit:.2f}/s)",
        f"{ratio:.2f}×",
        f"{hashing.login_rate:.2f} logins/s",
        ratio >= LOGIN_BOUND,
        [r["ok_rps"] / hashing.limit for r in view.runs(OURS, "logins")],
        at_least(LOGIN_BOUND),
        ".2f",
    )


def render_targets(view: View, verdicts: Verdicts) -> list[str]:
    if not verdicts.targets:
        return []
    lines = [
        "## Targets",
        "",
        "*value*: the ratio of the medians over the rounds, which decides PASS/MISS. *per round*: "
        "the same ratio inside each round (both sides measured minutes apart at most), and how "
        "many rounds meet the target on their own: where they disagree with the verdict, the "
        "verdict is within this machine's noise.",
        "",
        "| target | value | measured | result | per round | rounds meeting it |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in verdicts.targets:
        meeting = sum(1 for v in t.rounds if t.meets(v))
        lines.append(
            f"| {t.name} | {t.value} | {t.measured} | {verdict(t.ok)} | {seq(t.rounds, t.spec)} | "
            f"{meeting}/{len(t.rounds)} |"
        )
    lines.append("")
    fragile = [
        t.name for t in verdicts.targets if t.ok and t.rounds and not all(map(t.meets, t.rounds))
    ]
    if fragile:
        lines += [
            "Passed on the medians but not in every round, so within this machine's noise: "
            + "; ".join(fragile)
            + ". A rerun may turn these into misses.",
            "",
        ]
    return lines + _fastest(view, verdicts)


def _fastest(view: View, verdicts: Verdicts) -> list[str]:
    if len(view.options()) < 2:
        return []
    conns = {"p_low": view.load.conns_low, "p_high": view.load.conns_high}
    where = [f"**{best}** at {conns[key]}" for key, best in verdicts.fastest.items()]
    where[0] += " connections"
    return [
        f"Fastest option for our service: {', '.join(where)} (by median req/s; candidates: "
        f"{', '.join(view.options())}); see the per-round req/s in the tables below for how clear "
        "the ranking is.",
        "",
    ]


def render_pg_redis(view: View) -> list[str]:
    """Ours on PostgreSQL + Redis against ours on SQLite, both as the README serves them."""
    if not (view.runs(PG_REDIS, "p_low") and view.runs(OURS, "p_low")):
        return []
    key = "p_low"
    cpu = "server_cpu_ms_per_req"
    rps = view.per_round(PG_REDIS, OURS, key)
    cpu_rounds = view.per_round(PG_REDIS, OURS, key, cpu)
    p99 = view.per_round(PG_REDIS, OURS, key, "p99_us")
    return [
        f"## /protected on PostgreSQL + Redis against SQLite (ours, hypercorn, "
        f"{view.load.conns_low} connections)",
        "",
        "The same server and settings; only the backend differs: with AUTH_REDIS_URL the change "
        "epoch is a Redis GET per turn of the event loop (concurrent requests share one, sent "
        "after they all arrived) instead of a memory-mapped file, and PostgreSQL is asked only "
        "when a token is new or the epoch moved. Ratios are PostgreSQL + Redis ÷ SQLite; "
        "redis-server's own CPU is not in srv CPU.",
        "",
        "| measure | SQLite | PostgreSQL + Redis | ratio (medians) | ratio per round |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| req/s | {view.med(OURS, key):.0f} | {view.med(PG_REDIS, key):.0f} | "
        f"{view.med(PG_REDIS, key) / view.med(OURS, key):.2f}× | {seq(rps, '.2f')} |",
        f"| srv CPU ms/req | {view.med(OURS, key, cpu):.2f} | {view.med(PG_REDIS, key, cpu):.2f} "
        f"| {view.med(PG_REDIS, key, cpu) / view.med(OURS, key, cpu):.2f}× | "
        f"{seq(cpu_rounds, '.2f')} |",
        f"| p99 ms | {ms(view.med(OURS, key, 'p99_us'))} | {ms(view.med(PG_REDIS, key, 'p99_us'))} "
        f"| {view.med(PG_REDIS, key, 'p99_us') / view.med(OURS, key, 'p99_us'):.2f}× | "
        f"{seq(p99, '.2f')} |",
        "",
    ]
