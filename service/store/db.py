"""Engines and sessions, built at startup from Settings.

On SQLite there are two engines on the one file: readers begin deferred transactions, the writer
begins ``BEGIN IMMEDIATE`` (so a writer waits on the busy timeout instead of failing on a lock
upgrade) through a single connection, which serialises this process's writes.

The SQLite file holds password hashes and emails: it is created mode 0600 before the engines
open it (SQLite gives its -wal and -shm files the database file's mode), and an existing one this
user owns is narrowed to the owner. A file or folder that cannot be used is a ConfigError at
start-up, one line, rather than a traceback at the first query.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service.core.config import ConfigError, Settings


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.database_url
        self._sqlite_file: Path | None = None
        if settings.is_sqlite:
            self._sqlite_file = _prepare_sqlite_file(settings.database_url)
            self.reader = _sqlite_engine(settings, begin="BEGIN", pool_size=settings.db_pool_size)
            self.writer = _sqlite_engine(settings, begin="BEGIN IMMEDIATE", pool_size=1)
        else:
            self.reader = create_async_engine(
                settings.database_url,
                pool_size=settings.db_pool_size,
                pool_timeout=settings.db_pool_timeout,
                pool_pre_ping=True,
            )
            self.writer = self.reader
        self._read_sessions = async_sessionmaker(self.reader, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self.writer, expire_on_commit=False)

    @asynccontextmanager
    async def session(self, *, write: bool) -> AsyncIterator[AsyncSession]:
        """A session in one transaction; closing it rolls back whatever was not committed.

        Loaded objects stay readable after the block (close detaches, it does not expire).
        """
        factory = self._write_sessions if write else self._read_sessions
        async with factory() as session:
            yield session

    async def ping(self) -> None:
        """Raise unless the database answers (and, for a SQLite file, can be written)."""

        async def check() -> None:
            async with self.reader.connect() as connection:
                await connection.execute(text("SELECT 1"))
            if self._sqlite_file is not None and not _writable(self._sqlite_file):
                raise OperationalError("ping", {}, ReadOnlyDatabase(str(self._sqlite_file)))

        try:
            await asyncio.wait_for(check(), timeout=self.settings.ready_timeout)
        except UNAVAILABLE_ERRORS:
            await self.reset()
            raise

    async def reset(self) -> None:
        """Drop pooled connections; the next use opens new ones."""
        await self.reader.dispose()
        if self.writer is not self.reader:
            await self.writer.dispose()

    async def dispose(self) -> None:
        await self.reset()

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database file (None for PostgreSQL or a SQLite URI)."""
        return self._sqlite_file


# Errors meaning "the database cannot be used right now" (503), not "the request is wrong":
# unreachable server, closed connection, read-only or missing file, pool exhausted.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeout,
    ConnectionError,
    TimeoutError,
)
# Of those: every pooled connection was busy for the whole pool timeout (the database is up).
POOL_EXHAUSTED: tuple[type[Exception], ...] = (PoolTimeout,)
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, DBAPIError, OSError)


class ReadOnlyDatabase(Exception):
    """The SQLite file (or its folder, where the WAL lives) cannot be written."""


def _writable(path: Path) -> bool:
    folder_ok = os.access(path.parent, os.W_OK | os.X_OK)
    return folder_ok and (not path.exists() or os.access(path, os.W_OK))


def _prepare_sqlite_file(url: str) -> Path | None:
    """The database file, created 0600 if absent, its folder made if missing; None for a URI.

    The folder must be writable too: SQLite creates the -wal and -shm files there.
    """
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).expanduser()
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"AUTH_DATABASE_URL: {folder} is not a folder") from None
    except OSError as exc:
        raise unusable_file(f"cannot create the folder {folder}", exc) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"AUTH_DATABASE_URL: the folder {folder} is read-only "
            "(SQLite writes the database's -wal and -shm files there)"
        )
    try:
        # Opening for writing also proves that an existing file can be written.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        for owned in (path, beside(path, "-wal"), beside(path, "-shm")):
            _owner_only(owned)
    except OSError as exc:
        raise unusable_file(f"cannot open {path} for writing", exc) from None
    return path


def beside(path: Path, suffix: str) -> Path:
    """``path`` with ``suffix`` added to its name (the -wal, -shm and -epoch files)."""
    return path.with_name(path.name + suffix)


def _owner_only(path: Path) -> None:
    """Take group and other permissions off ``path`` if it exists and this user owns it."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(status.st_mode)
    if status.st_uid == os.geteuid() and mode & 0o077:
        os.chmod(path, mode & ~0o077)


def unusable_file(what: str, error: OSError) -> ConfigError:
    """The one-line ConfigError for a file beside the database that cannot be used."""
    return ConfigError(f"AUTH_DATABASE_URL: {what}: {error.strerror or error}")


def _sqlite_engine(settings: Settings, *, begin: str, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(
        settings.database_url,
        pool_size=pool_size,
        max_overflow=0 if pool_size == 1 else 10,
        pool_timeout=settings.db_pool_timeout,
        connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000},
    )
    busy_timeout = settings.sqlite_busy_timeout_ms

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine
