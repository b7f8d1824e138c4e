"""Process-wide tuning for a process that serves the app (not for an app merely created).

CPython's cyclic garbage collector walks the objects that survive between collections. A
serving process holds a large, long-lived heap (the app, SQLAlchemy's mappers, pydantic's
validators, the common-password list: about 125,000 objects here), and its first-generation
collections ran every 700 allocations, about every 15 requests. Measured on one hypercorn worker
under load (GET /protected, 32 connections): 60-85 µs of collector time per request; with the
start-up heap frozen, 24-32 µs; with the first threshold at 10,000 as well, 4-5 µs.

Objects of the frozen heap are still freed by reference counting; only reference cycles among
them would never be collected, and the start-up heap is meant to live as long as the process.
"""

from __future__ import annotations

import gc

FIRST_GENERATION_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Collect once, freeze what survives (the start-up heap) and collect less often."""
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(FIRST_GENERATION_THRESHOLD, second, third)
