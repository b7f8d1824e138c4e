"""The benchmark's settings, read once from the environment into frozen dataclasses."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
MAIN = BENCH.parent
PEERS = BENCH / "peers"
WRK_DIR = BENCH / "wrk"
OUT = BENCH / "out"
HOST = "127.0.0.1"
USERNAME = "bench"
EMAIL = "bench@example.com"
PASSWORD = "bench-password-123"
SOURCES = ("head", "worktree")


class SettingsError(ValueError):
    """A setting cannot be used; the message is one line for the person running the bench."""


def seconds(text: str) -> int:
    """``10s``, ``10`` or ``1.5m`` as whole seconds."""
    text = text.strip().lower()
    if text.endswith("m"):
        return int(float(text[:-1]) * 60)
    return int(float(text.rstrip("s")))


@dataclass(frozen=True)
class Load:
    """How much load each run applies; kept in raw.json as ``config`` for re-rendering."""

    rounds: int
    duration: int
    warmup: int
    conns_low: int
    conns_high: int
    storm_conns: int
    storm_logins: int
    wrk_threads: int
    wrk_timeout: int
    login_conns: int
    cores: int
    # POST /token (client credentials) connections: under the service's 30/minute address
    # window, which every attempt in flight occupies (the client-credentials section says why).
    cc_conns: int = 16

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Load:
        """From a raw.json ``config``; one written before ``cores`` was kept gets this machine's."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in config.items() if k in known}
        values.setdefault("cores", os.cpu_count() or 1)
        return cls(**values)


@dataclass(frozen=True)
class Settings:
    load: Load
    port_base: int
    diag: bool
    diag_pool: bool
    source: str  # head: a `git archive HEAD` snapshot; worktree: the checkout as it is
    baseline: str | None  # a git revision of the service to measure side by side with HEAD
    only: frozenset[str]  # scenario names; empty: every scenario
    servers: frozenset[str]  # server names, or {"all"}; empty: the default set
    results: Path
    bin_dir: Path  # bench/.venv/bin: run.sh runs us with that interpreter
    redis_url: str  # the resource-server scenario's shared Redis (the revocation feed)
    # ours-pg-redis: the PostgreSQL server (a database of the run's own is made there), psql
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432"
    psql: str = "psql"
    pg_redis: bool = True

    @property
    def python(self) -> str:
        return str(self.bin_dir / "python")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], executable: str) -> Settings:
        source = environ.get("SERVICE_SOURCE", "head")
        if source not in SOURCES:
            raise SettingsError(f"SERVICE_SOURCE={source!r}: use one of {', '.join(SOURCES)}")
        return cls(
            load=_load(environ),
            port_base=int(environ.get("PORT_BASE", "18100")),
            diag=environ.get("DIAG", "1") == "1",
            diag_pool=environ.get("DIAG_POOL") == "1",
            source=source,
            baseline=environ.get("BASELINE") or None,
            only=_names(environ.get("ONLY", "")),
            servers=_names(environ.get("SERVERS", "")),
            results=Path(environ.get("RESULTS", str(BENCH / "RESULTS.md"))),
            bin_dir=Path(executable).parent,
            redis_url=environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
            postgres_url=environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"),
            psql=environ.get("BENCH_PSQL", "psql"),
            pg_redis=environ.get("PG_REDIS", "1") == "1",
        )


def _load(environ: Mapping[str, str]) -> Load:
    quick = environ.get("QUICK") == "1"
    cores = os.cpu_count() or 1
    return Load(
        rounds=int(environ.get("ROUNDS", "1" if quick else "3")),
        duration=seconds(environ.get("DURATION", "3s" if quick else "10s")),
        warmup=seconds(environ.get("WARMUP", "1s" if quick else "3s")),
        conns_low=int(environ.get("CONNS_LOW", "64")),
        conns_high=int(environ.get("CONNS_HIGH", "1000")),
        storm_conns=int(environ.get("STORM_CONNS", "32")),
        storm_logins=int(environ.get("STORM_LOGINS", "16")),
        wrk_threads=int(environ.get("WRK_THREADS", "2")),
        wrk_timeout=seconds(environ.get("WRK_TIMEOUT", "10s")),
        login_conns=int(environ.get("LOGIN_CONNS", str(cores * 2))),
        cores=cores,
        cc_conns=int(environ.get("CC_CONNS", "16")),
    )


def _names(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())
