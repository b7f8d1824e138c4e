"""With BASELINE: ours at the baseline revision and at HEAD, each divided by the floor."""

from __future__ import annotations

from harness.catalog import CACHED_USER, FLOOR, OURS
from harness.report.stats import med, seq
from harness.report.view import View


def render(view: View) -> list[str]:
    baseline = view.raw.get("baseline")
    if not baseline:
        return []
    label = baseline["label"]
    lines = [
        f"## Baseline: ours at {label} and at HEAD, each against the floor",
        "",
        "Both revisions of our service run as the README serves it (python -m service.serve, "
        "their own hypercorn.toml, 2 workers, access log off), each from its own `git archive` "
        "snapshot with that revision's imports, in the same interleaved rounds as the floor (the "
        "bare Quart route on HEAD's python -m service.serve). A server counts as ready once "
        "python -m service.serve has printed that all its workers serve. *÷ floor*: req/s "
        "divided by the floor's, from the medians and inside each round; *spread*: the highest "
        "per-round ratio minus the lowest. *CPU/req ÷ floor's*: the server CPU time per request "
        "divided by the floor's, which moves less with the other load than req/s does. The "
        "machine is shared: compare these ratios, not the req/s.",
        "",
        "| scenario | server | median req/s | ÷ floor | ÷ floor per round | spread "
        "| srv CPU ms/req | CPU/req ÷ floor's | per round | spread |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for key, conns in view.connections():
        for name in _pairs(label):
            row = _row(view, key, conns, name)
            lines += [row] if row else []
    lines += ["", *_head_vs_base(view, label), ""]
    return lines


def _pairs(label: str) -> list[str]:
    return [f"{OURS}@{label}", OURS, f"{CACHED_USER}@{label}", CACHED_USER]


def _shown(name: str) -> str:
    return name if "@" in name else f"{name} (HEAD)"


def _row(view: View, key: str, conns: int, name: str) -> str | None:
    if not view.runs(name, key) or not view.runs(FLOOR, key):
        return None
    cpu_field = "server_cpu_ms_per_req"
    ratios, cpu_ratios = (
        view.per_round(name, FLOOR, key),
        view.per_round(name, FLOOR, key, cpu_field),
    )
    cpu, floor_cpu = view.med(name, key, cpu_field), view.med(FLOOR, key, cpu_field)
    return (
        f"| GET /protected @{conns} | {_shown(name)} | {view.med(name, key):.0f} "
        f"| {view.med(name, key) / view.med(FLOOR, key):.2f}× | {seq(ratios, '.2f')} "
        f"| {_spread(ratios):.2f} | {cpu:.2f} | {cpu / floor_cpu:.2f}× | {seq(cpu_ratios, '.2f')} "
        f"| {_spread(cpu_ratios):.2f} |"
    )


def _spread(values: list[float]) -> float:
    return max(values) - min(values) if values else float("nan")


def _head_vs_base(view: View, label: str) -> list[str]:
    """HEAD ÷ baseline inside each round: the change itself, without the floor."""
    parts = []
    for key, conns in view.connections():
        for name in (OURS, CACHED_USER):
            rates = view.per_round(name, f"{name}@{label}", key)
            cpu = view.per_round(name, f"{name}@{label}", key, "server_cpu_ms_per_req")
            if rates:
                parts.append(
                    f"{name} @{conns}: req/s {seq(rates, '.2f')} (median {med(rates):.2f}×), "
                    f"CPU/req {seq(cpu, '.2f')} (median {med(cpu):.2f}×)"
                )
    if not parts:
        return []
    return [
        f"HEAD ÷ {label}, round by round (both measured in the same round): "
        + "; ".join(parts)
        + "."
    ]
