"""Shared test helpers (plain functions and constants; fixtures live in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quart.typing import TestClientProtocol

from service.config import Settings

# Aliased so pytest does not try to collect a class whose name starts with "Test".
Client = TestClientProtocol

PASSWORD = "correct horse battery staple"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Testing settings: a SQLite file under tmp_path and cheap argon2 parameters."""
    values: dict[str, Any] = {
        "env": "testing",
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        "instance_path": tmp_path / "instance",
        "argon2_memory_cost": 1024,
        "argon2_time_cost": 1,
        "argon2_parallelism": 1,
        "hash_workers": 2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass(frozen=True)
class SignedUp:
    id: str
    username: str
    email: str
    password: str
