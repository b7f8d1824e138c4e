"""The served app tunes the garbage collector once it has started (service/ops/runtime.py)."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.ops.runtime import FIRST_GENERATION_THRESHOLD, tune_garbage_collector
from tests.servers import clean_env, run_python


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tuning_freezes_the_heap_and_collects_less_often(restored_gc: None) -> None:
    survivor = {"kept": [1, 2, 3]}

    tune_garbage_collector()

    assert gc.get_freeze_count() > 0
    assert gc.is_tracked(survivor)
    assert all(tracked is not survivor for tracked in gc.get_objects())  # frozen: not walked
    assert gc.get_threshold()[0] == FIRST_GENERATION_THRESHOLD


SERVE_AND_REPORT = """
import asyncio, gc, json
from service.asgi import app

async def main():
    before = gc.get_freeze_count()
    async with app.test_app():
        print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                          "threshold": gc.get_threshold()[0]}))

asyncio.run(main())
"""


@pytest.mark.parametrize("tuning", ["true", "false"])
@pytest.mark.slow
def test_the_served_app_tunes_the_collector_unless_told_not_to(tmp_path: Path, tuning: str) -> None:
    env = clean_env(
        AUTH_ENV="testing",
        AUTH_JWT_SECRET="r" * 48,
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/auth.db",
        AUTH_ARGON2_MEMORY_COST="1024",
        AUTH_ARGON2_TIME_COST="1",
        AUTH_GC_TUNING=tuning,
    )
    result = run_python("-c", SERVE_AND_REPORT, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["before"] == 0
    if tuning == "true":
        assert report["frozen"] > 10_000
        assert report["threshold"] == FIRST_GENERATION_THRESHOLD
    else:
        assert report["frozen"] == 0
        assert report["threshold"] == 700
