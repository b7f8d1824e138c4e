"""The alembic migrations produce exactly the models' schema, and run from every entry point."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from service.store import migrations
from service.store.db import Database
from service.store.models import Base
from tests.support import make_settings

ROOT = Path(__file__).resolve().parents[2]


def sqlite_schema(path: Path) -> set[tuple[str, str, str]]:
    """Every table and index with its normalised DDL, as SQLite itself reports it."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT type, name, sql FROM sqlite_master "
            "WHERE name NOT LIKE 'sqlite_%' AND name != 'alembic_version'"
        ).fetchall()
    return {(kind, name, " ".join((sql or "").split())) for kind, name, sql in rows}


# Autogenerate cannot reflect SQLite expression indexes; the DDL comparison below covers them.
@pytest.mark.filterwarnings("ignore:.*expression-based index")
async def test_migrations_produce_exactly_the_models_schema(tmp_path: Path) -> None:
    migrated_dir, created_dir = tmp_path / "migrated", tmp_path / "created"
    migrated_dir.mkdir()
    created_dir.mkdir()
    migrated = Database(make_settings(migrated_dir))
    created = Database(make_settings(created_dir))
    try:
        await migrations.upgrade(migrated)
        async with created.writer.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)

        def differences(connection: Connection) -> list[object]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))

        async with migrated.reader.connect() as connection:
            assert await connection.run_sync(differences) == []
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
        assert "alembic_version" in tables
    finally:
        await migrated.dispose()
        await created.dispose()

    # Expression indexes are beyond autogenerate's reach on SQLite: compare the DDL itself.
    assert sqlite_schema(migrated_dir / "auth.db") == sqlite_schema(created_dir / "auth.db")


async def test_upgrade_twice_is_a_no_op(tmp_path: Path) -> None:
    database = Database(make_settings(tmp_path))
    try:
        await migrations.upgrade(database)
        await migrations.upgrade(database)
    finally:
        await database.dispose()
    assert ("index", "uq_users_email_lower") in {
        (kind, name) for kind, name, _ in sqlite_schema(tmp_path / "auth.db")
    }


def run(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    env["AUTH_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    env["AUTH_ENV"] = "testing"
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow
async def test_alembic_command_line_upgrade_head(tmp_path: Path) -> None:
    result = run([sys.executable, "-m", "alembic", "upgrade", "head"], tmp_path)

    assert result.returncode == 0, result.stderr
    assert ("table", "users") in {(k, n) for k, n, _ in sqlite_schema(tmp_path / "cli.db")}


@pytest.mark.slow
async def test_service_cli_db_upgrade(tmp_path: Path) -> None:
    result = run([sys.executable, "-m", "service", "db", "upgrade"], tmp_path)

    assert result.returncode == 0, result.stderr
    assert ("table", "users") in {(k, n) for k, n, _ in sqlite_schema(tmp_path / "cli.db")}
