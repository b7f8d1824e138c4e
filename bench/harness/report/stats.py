"""Medians and number formats of the report."""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from harness.wrk import Run


def med(values: Iterable[float]) -> float:
    data = list(values)
    return float(statistics.median(data)) if data else float("nan")


def med_of(runs: list[Run], key: str) -> float:
    return med(r[key] for r in runs)


def wrk_cores(runs: list[Run]) -> float:
    """The cores wrk itself used, median over ``runs``."""
    return med(r["wrk_cpu_s"] / (r["duration_us"] / 1e6) for r in runs)


def cores_left(run: Run, cores: int) -> float:
    """The cores neither other processes nor wrk used during ``run`` (at least 0.01)."""
    left: float = cores - run["other_cores"] - run["wrk_cpu_s"] / (run["duration_us"] / 1e6)
    return max(left, 0.01)


def over2s(runs: list[Run]) -> str:
    """Share of the responses slower than 2 s, median over the runs."""
    values = [100 - r["within_2s_pct"] for r in runs if "within_2s_pct" in r]
    return f"{med(values):.0f}" if values else "n/a"


def seq(values: Iterable[float], spec: str) -> str:
    return ", ".join(format(v, spec) for v in values)


def ms(us: float) -> str:
    return f"{us / 1000:.1f}" if us == us else "n/a"


def total(runs: list[Run], key: str) -> int:
    return sum(r[key] for r in runs)


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**MISS**"
