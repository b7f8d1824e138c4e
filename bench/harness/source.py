"""The service's code under test: a snapshot of a git revision (or the working tree), its
dependencies in bench/.venv, and what the benchmark reads from it (through probe.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.settings import MAIN, SettingsError

GIT = shutil.which("git") or "git"
TAR = shutil.which("tar") or "tar"
PROBE = Path(__file__).resolve().parent / "probe.py"
# What a snapshot holds: the service and what serving and migrating it reads, and the examples
# (the resource-server scenario serves examples/resource_server).
ARCHIVED = ("service", "alembic", "alembic.ini", "hypercorn.toml", "pyproject.toml", "examples")


@dataclass(frozen=True)
class Source:
    label: str  # HEAD, or the baseline's short commit
    commit: str
    path: Path
    note: str  # for the report: what exactly was measured


def _git(*args: str) -> str:
    argv = [GIT, "-C", str(MAIN), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()  # noqa: S603


def resolve(rev: str) -> str:
    """The commit ``rev`` names; SettingsError when it names none."""
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SettingsError(f"BASELINE={rev!r} is not a commit of {MAIN}") from None


def head(mode: str, tmp: Path) -> Source:
    """HEAD as a `git archive` snapshot, or (mode worktree) the checkout as it is."""
    commit = resolve("HEAD")
    dirty = _git("status", "--porcelain", "--", *ARCHIVED)
    if mode == "worktree":
        note = f"the working tree of {MAIN} at HEAD {commit}"
        return Source("HEAD", commit, MAIN, note + (" with uncommitted changes" if dirty else ""))
    note = f"commit {commit} (`git archive HEAD` into a temp dir"
    if dirty:
        note += "; the checkout also had uncommitted changes to the service, not benchmarked"
    return Source("HEAD", commit, _archive(commit, tmp / "src"), note + ")")


def baseline(rev: str, tmp: Path) -> Source:
    commit = resolve(rev)
    path = _archive(commit, tmp / f"src-{commit[:7]}")
    note = f"commit {commit} (`git archive {rev}` into a temp dir)"
    return Source(commit[:7], commit, path, note)


def _archive(commit: str, dest: Path) -> Path:
    present = [p for p in ARCHIVED if _git("ls-tree", "--name-only", commit, "--", p)]
    archive = subprocess.run(  # noqa: S603 (git archive of a resolved commit)
        [GIT, "-C", str(MAIN), "archive", commit, *present], capture_output=True, check=True
    ).stdout
    dest.mkdir(parents=True)
    subprocess.run([TAR, "-x", "-C", str(dest)], input=archive, check=True)  # noqa: S603
    return dest


def dependencies(source: Source) -> list[str]:
    project = tomllib.loads((source.path / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def install_dependencies(python: str, sources: list[Source], out: Path) -> None:
    """Every source's dependencies into bench/.venv, at the project venv's versions."""
    wanted = list(dict.fromkeys(dep for source in sources for dep in dependencies(source)))
    argv = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *wanted]
    project_python = MAIN / ".venv" / "bin" / "python"
    if project_python.exists():
        # The project venv's versions, so the benchmark runs the code the tests run.
        constraints = out / "constraints.txt"
        constraints.write_text(_frozen(project_python))
        argv += ["-c", str(constraints)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise RuntimeError(
            "installing the service's dependencies failed:\n" + result.stderr[-3000:]
        )


def _frozen(python: Path) -> str:
    argv = [str(python), "-m", "pip", "freeze", "--exclude-editable"]
    frozen = subprocess.run(argv, capture_output=True, text=True, check=False).stdout  # noqa: S603
    kept = [
        line for line in frozen.splitlines() if line and not line.startswith(("-e", "auth-service"))
    ]
    return "\n".join(kept) + "\n"


def announces_serving(source: Source) -> bool:
    """Whether this snapshot's python -m service.serve prints a line once every worker serves."""
    for path in ("service/ops/serve.py", "service/serve.py"):
        file = source.path / path
        if file.exists() and "serving on" in file.read_text():
            return True
    return False


def _probe(
    python: str, source: Source, what: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    env["PYTHONPATH"] = str(source.path)
    return subprocess.run(  # noqa: S603 (probe.py of this folder)
        [python, str(PROBE), what],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tempfile.gettempdir(),
        check=False,
    )


def cache_ttl(python: str, source: Source) -> float | None:
    """The benchmarked code's per-process token cache lifetime, if it has one we can read."""
    try:
        return float(_probe(python, source, "cache-ttl", 60).stdout.strip())
    except ValueError:
        return None


def hash_cost(python: str, source: Source) -> dict[str, float]:
    """CPU and wall seconds per argon2 hash and verify with the service's default parameters."""
    result = _probe(python, source, "hash-cost", 120)
    if result.returncode != 0:
        raise RuntimeError(f"probe.py hash-cost failed:\n{result.stderr[-2000:]}")
    cost: dict[str, float] = json.loads(result.stdout)
    return cost


def hypercorn_backlog(source: Source) -> int | None:
    """The listen backlog hypercorn.toml sets, or None when it sets none (hypercorn's: 100)."""
    try:
        value = tomllib.loads((source.path / "hypercorn.toml").read_text()).get("backlog")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return int(value) if value is not None else None
