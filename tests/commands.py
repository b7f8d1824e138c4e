"""The service's command (``auth-service``, ``python -m service``) run in this process:
``service.ops.cli.main(argv)`` with its own AUTH_* environment, working folder and standard
input, what it prints captured. Tests keep a child process (tests/servers.py) only where the
process boundary is the behaviour."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.ops.cli import main


def testing_variables(database: Path) -> dict[str, str]:
    """A testing environment with its SQLite database at ``database`` and cheap argon2."""
    return {
        "AUTH_ENV": "testing",
        "AUTH_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "AUTH_ARGON2_MEMORY_COST": "1024",
        "AUTH_ARGON2_TIME_COST": "1",
    }


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class InProcessCommand:
    """``await command(*args, stdin=...)``: what the command would print and exit with."""

    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]
    cwd: Path
    variables: dict[str, str]

    async def __call__(self, *args: str, stdin: str = "") -> Finished:
        self.capsys.readouterr()  # what the test printed before is not the command's
        with self.monkeypatch.context() as patch:
            for name in [name for name in os.environ if name.startswith("AUTH_")]:
                patch.delenv(name)
            for name, value in self.variables.items():
                patch.setenv(name, value)
            patch.chdir(self.cwd)  # no developer's .env
            patch.setattr(sys, "stdin", io.StringIO(stdin))
            # main() runs its own event loop (asyncio.run): not on the test's running one.
            returncode = await asyncio.to_thread(exit_status, list(args))
        out, err = self.capsys.readouterr()
        return Finished(returncode, out, err)


def exit_status(argv: list[str]) -> int:
    """``main(argv)``'s status, or the one a process would exit with on SystemExit (argparse)."""
    try:
        return main(argv)
    except SystemExit as exit_:
        if exit_.code is None:
            return 0
        return exit_.code if isinstance(exit_.code, int) else 1
