"""Run by the benchmark with a snapshot of the service on PYTHONPATH (not imported by it):
prints what the report needs to know of that snapshot's code.

    python probe.py cache-ttl    the token cache's lifetime in seconds (SubjectCache's ttl)
    python probe.py hash-cost    JSON: the argon2 parameters and CPU/wall seconds per hash

Modules are looked up where the newest layout keeps them (service.core.config, ...) and,
failing that, where older commits did (service.config, ...), so one benchmark reads each.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import time
from types import ModuleType
from typing import Any

PASSWORD = "bench-password-123"


def first_module(*names: str) -> ModuleType:
    """The first of ``names`` that exists; a module missing inside one is still an error."""
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                raise
    raise ModuleNotFoundError(f"none of {', '.join(names)}")


def cache_ttl() -> str:
    # The subject cache: service/accounts/subjects.py since 4651f64, the epoch module before.
    for name in ("service.accounts.subjects", "service.store.epoch", "service.epoch"):
        try:
            cache = getattr(first_module(name), "SubjectCache", None)
        except ModuleNotFoundError:
            continue
        if cache is not None:
            return str(inspect.signature(cache).parameters["ttl"].default)
    raise LookupError("no SubjectCache in this commit")


def hash_cost() -> str:
    config = first_module("service.core.config", "service.config")
    passwords = first_module("service.core.passwords", "service.passwords")
    settings = config.Settings(_env_file=None)
    hasher = passwords.PasswordHasher(settings)
    stored = hasher._hash(PASSWORD)
    out: dict[str, Any] = {
        "memory_kib": settings.argon2_memory_cost,
        "time_cost": settings.argon2_time_cost,
        "parallelism": settings.argon2_parallelism,
        "hash_workers": settings.hash_workers,
    }
    for name, step, args in (
        ("hash", hasher._hash, (PASSWORD,)),
        ("verify", hasher._verify_and_update, (PASSWORD, stored)),
    ):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(4):
            step(*args)
        out[name + "_cpu_s"] = (time.process_time() - cpu) / 4
        out[name + "_wall_s"] = (time.perf_counter() - wall) / 4
    hasher.close()
    return json.dumps(out)


PROBES = {"cache-ttl": cache_ttl, "hash-cost": hash_cost}

if __name__ == "__main__":
    print(PROBES[sys.argv[1]]())
