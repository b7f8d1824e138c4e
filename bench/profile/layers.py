"""The per-layer table of GET /protected, before and after, from protected.py's JSON outputs.

    bench/profile/layers.py BEFORE_SQLITE AFTER_SQLITE [BEFORE_REDIS AFTER_REDIS]

Each input is ``protected.py --mode callgrind --json-out FILE`` (instructions per request). A
layer's cost is ``full - variant`` (the variant that leaves the layer out); Quart's own path and
asyncio are what is left of the whole app. µs at 0.26 µs per 1000 instructions, the calibration of
bench/PROFILE-issue15.md (process_time against callgrind on this machine, ±15 %).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

US_PER_KINSTR = 0.26
# (label, variant left out, part of the sum "ours over Quart")
LAYERS = (
    ("RequestEnvelope (request id, security headers, in-flight count)", "no_envelope", True),
    ("metrics hook (http_request_duration_seconds)", "no_metrics", True),
    ("— of which the histogram's observe (multiprocess mmap)", "metrics_no_observe", False),
    ("guard (token_required: bearer, verifier cache, user, epoch)", "no_guard", True),
    ("— bearer parse", "guard_no_bearer", False),
    ("— Accounts.user_for (hooks, subject cache, epoch)", "guard_no_user_for", False),
    ("—— of which the epoch read", "guard_no_epoch", False),
    ("response side (model, validation, serialisation, JSON)", "no_json", True),
)


def load(path: str) -> dict[str, float]:
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return {name: float(value) for name, value in data["results"].items()}


def cost(results: dict[str, float], variant: str) -> float | None:
    if variant not in results:
        return None
    return (results["full"] - results[variant]) / 1000


def cell(kinstr: float | None) -> str:
    if kinstr is None:
        return "—"
    return f"{kinstr:,.1f}k / {kinstr * US_PER_KINSTR:.1f} µs"


def table(title: str, before: dict[str, float], after: dict[str, float]) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| layer | before (k instr / µs) | after (k instr / µs) | saved µs |",
        "| --- | ---: | ---: | ---: |",
    ]

    def row(label: str, b: float | None, a: float | None) -> None:
        saved = f"{(b - a) * US_PER_KINSTR:+.1f}" if b is not None and a is not None else "—"
        lines.append(f"| {label} | {cell(b)} | {cell(a)} | {saved} |")

    whole_b, whole_a = cost(before, "null"), cost(after, "null")
    row("**whole app** (full minus the null driver)", whole_b, whole_a)
    summed: dict[str, float | None] = {"b": 0.0, "a": 0.0}

    def add(side: str, value: float | None) -> None:
        # A layer not measured on a side leaves that side's rest unknown.
        total = summed[side]
        summed[side] = None if total is None or value is None else total + value

    for label, variant, in_sum in LAYERS:
        b, a = cost(before, variant), cost(after, variant)
        row(label, b, a)
        if in_sum:
            add("b", b)
            add("a", a)
    sum_b, sum_a = summed["b"], summed["a"]
    rest_b = whole_b - sum_b if whole_b is not None and sum_b is not None else None
    rest_a = whole_a - sum_a if whole_a is not None and sum_a is not None else None
    row(
        "Quart's routing, dispatch, request and response objects, asyncio (the rest)",
        rest_b,
        rest_a,
    )
    drift = [abs(r["full"] - r["full_again"]) / 1000 for r in (before, after) if "full_again" in r]
    lines += [
        "",
        f"Noise: `full` measured first and last in one process differ by "
        f"{', '.join(f'{d:.1f}k' for d in drift)} instructions (before, after).",
        "",
    ]
    return lines


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 4):
        print(__doc__, file=sys.stderr)
        return 2
    out = table("SQLite (memory-mapped epoch)", load(argv[0]), load(argv[1]))
    if len(argv) == 4:
        out += table("Redis epoch (AUTH_REDIS_URL)", load(argv[2]), load(argv[3]))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
