"""RESULTS.md from a run's raw numbers (bench/out/raw.json): one function per section."""

from __future__ import annotations

from typing import Any

from harness.report import commands, compare, downstream, header, sections, why
from harness.report.targets import evaluate, render_pg_redis, render_targets
from harness.report.view import View


def render(raw: dict[str, Any], rerendered: bool = False) -> str:
    view = View.of(raw)
    verdicts = evaluate(view)
    lines = [
        *header.render(view, rerendered),
        *render_targets(view, verdicts),
        *compare.render(view),
        *sections.protected_tables(view),
        *render_pg_redis(view),
        *sections.storm(view),
        *sections.cold_token(view),
        *sections.logins(view),
        *downstream.resource_server(view),
        *downstream.client_credentials(view),
        *sections.memory(view),
        *sections.diagnostics(view),
        *sections.restarts(view),
        *why.render(view, verdicts),
        *commands.render(view),
    ]
    return "\n".join(lines) + "\n"
