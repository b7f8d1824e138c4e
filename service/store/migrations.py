"""Alembic driven from code: the SQLite start-up migration and ``python -m service db upgrade``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from service.store.db import Database

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
SCRIPT_LOCATION = PROJECT_ROOT / "alembic"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade(database: Database, revision: str = "head") -> None:
    """Migrate in one transaction on the writer engine.

    On SQLite the writer begins IMMEDIATE, so processes starting together migrate one at a time
    and the later ones find the schema already at head.
    """

    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    async with database.writer.begin() as connection:
        await connection.run_sync(run)
