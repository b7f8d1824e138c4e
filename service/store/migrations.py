"""Alembic driven from code: the SQLite start-up migration and ``python -m service db upgrade``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from service.core.config import ConfigError
from service.store.db import Database

# In an installed wheel the migrations are package data beside this module; in a checkout they
# are the repository's top-level alembic/ folder (the source of the wheel's copy).
PACKAGED_SCRIPTS = Path(__file__).resolve().parent / "alembic"
CHECKOUT_SCRIPTS = Path(__file__).resolve().parents[2] / "alembic"


def script_location() -> Path:
    """The folder of the migration scripts; ConfigError when this installation has none."""
    for folder in (PACKAGED_SCRIPTS, CHECKOUT_SCRIPTS):
        # env.py and versions/ tell the migrations apart from the alembic library itself, which
        # sits at site-packages/alembic when this package is installed.
        if (folder / "env.py").is_file() and (folder / "versions").is_dir():
            return folder
    raise ConfigError(
        f"the database migrations are missing: neither {PACKAGED_SCRIPTS} nor "
        f"{CHECKOUT_SCRIPTS} holds env.py and versions/; reinstall the package"
    )


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration built in code: an installed package has no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.set_main_option("path_separator", "os")
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
