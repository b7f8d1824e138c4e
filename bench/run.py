#!/usr/bin/env python3
"""Benchmark of the auth service against its peers, in interleaved rounds on one machine.

Run through ``bench/run.sh`` (it builds bench/.venv and installs wrk). Settings (environment),
read once at start-up (harness/settings.py):

    ROUNDS=3 DURATION=10s      rounds and the length of every load run (default 3 and 10s)
    QUICK=1                    ROUNDS=1 DURATION=3s, to check that everything works
    CONNS_LOW=64 CONNS_HIGH=1000 STORM_CONNS=32 STORM_LOGINS=16 LOGIN_CONNS=<2 x cores>
    CC_CONNS=16                POST /token (client credentials) connections
    BENCH_REDIS_URL=redis://127.0.0.1:6379/0   the Redis that ours-es256 and rs-redis share
                               (each run its own AUTH_REDIS_PREFIX)
    WRK_THREADS=2 WRK_TIMEOUT=10s WARMUP=3s PORT_BASE=18100
    DIAG=1                     diagnostic variants of our service (0 to skip)
    DIAG_POOL=1                one more: AUTH_DB_POOL_SIZE=40 (off by default)
    SERVICE_SOURCE=head        benchmark a `git archive HEAD` snapshot of /work/main
                               (=worktree: the checkout as it is, uncommitted changes included)
    BASELINE=<git rev>         also measure ours at that revision (its own `git archive`, its
                               own imports and hypercorn.toml) in the same interleaved rounds;
                               by default the run is then ours at both revisions, the floor
                               and the cached-user diagnostic at both; the report gives each
                               ours ÷ floor, per round
    ONLY=protected,...         only these scenarios: protected (CONNS_LOW), protected-high,
                               health, storm, logins, hash, cold, resource-server (GET /stock
                               of examples/resource_server with and without Redis, and the
                               floor, with a token of ours-es256), client-credentials
    SERVERS=a,b | all          only these servers (ours-hypercorn always runs); all: every one,
                               baseline variants included
    RESULTS=bench/RESULTS.md   where the report goes

    bench/run.sh --render [bench/out/raw.json]   the report again from a run's raw numbers

Every load loop is bounded by wrk's -d; every server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import sys

from harness.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
