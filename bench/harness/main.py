"""``bench/run.py``: run the benchmark, or re-render a report from a run's raw numbers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from harness import report, runner
from harness.settings import OUT, Settings, SettingsError


def main(argv: list[str]) -> int:
    try:
        settings = Settings.from_env(os.environ, sys.executable)
        if argv[:1] == ["--render"]:
            return rerender(Path(argv[1]) if len(argv) > 1 else OUT / "raw.json", settings.results)
        return runner.run(settings)
    except SettingsError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2


def rerender(raw: Path, results: Path) -> int:
    """RESULTS.md again from a run's raw numbers: same numbers, the current report code."""
    results.write_text(report.render(json.loads(raw.read_text()), rerendered=True))
    print(results)
    return 0
