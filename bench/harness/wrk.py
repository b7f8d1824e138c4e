"""wrk runs: the command line, starting and waiting for one, and its machine-readable line."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.settings import BENCH, WRK_DIR, Load

Run = dict[str, Any]  # one wrk run's numbers (report.lua's BENCH_JSON line, then ours)
RESULT_LINE = re.compile(r"^BENCH_JSON (\{.*\})$", re.MULTILINE)


@dataclass
class WrkRun:
    argv: list[str]
    output: Path
    process: subprocess.Popen[bytes]


@dataclass
class Wrk:
    threads: int
    timeout: int
    out_dir: Path = field(default=BENCH / "out" / "wrk")
    started: int = 0

    @classmethod
    def for_load(cls, load: Load, out_dir: Path | None = None) -> Wrk:
        return cls(load.wrk_threads, load.wrk_timeout, out_dir or BENCH / "out" / "wrk")

    def argv(
        self, url: str, conns: int, duration: int, script: str, token: str | None
    ) -> list[str]:
        argv = [
            "wrk",
            f"-t{min(self.threads, conns)}",
            f"-c{conns}",
            f"-d{duration}s",
            "--timeout",
            f"{self.timeout}s",
            "--latency",
            "-s",
            str(WRK_DIR / script),
        ]
        if token is not None:
            argv += ["-H", f"Authorization: Bearer {token}"]
        return [*argv, url]

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> WrkRun:
        self.started += 1
        output = self.out_dir / f"{self.started:04d}.txt"
        with output.open("wb") as handle:
            process = subprocess.Popen(  # noqa: S603 (wrk, with arguments built above)
                argv,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        return WrkRun(argv, output, process)

    def finish(self, run: WrkRun) -> Run:
        """Wait for ``run``; its numbers, with wrk's own CPU time (from wait4's rusage)."""
        _, status, usage = os.wait4(run.process.pid, 0)
        run.process.returncode = os.waitstatus_to_exitcode(status)
        result = parse(run.output.read_text(errors="replace"), run.process.returncode, run.argv)
        result["wrk_cpu_s"] = usage.ru_utime + usage.ru_stime
        result["log"] = str(run.output.relative_to(BENCH))
        return result

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> Run:
        return self.finish(self.start(argv, env))


def parse(text: str, returncode: int, argv: list[str]) -> Run:
    match = RESULT_LINE.search(text)
    if returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({returncode}): {shlex.join(argv)}\n{text[-2000:]}")
    result: Run = json.loads(match.group(1))
    seconds = result["duration_us"] / 1e6
    result["rps"] = result["requests"] / seconds
    result["ok_rps"] = (result["requests"] - result["status"]) / seconds
    result["socket_errors"] = sum(result[k] for k in ("connect", "read", "write", "timeout"))
    return result
