"""``python -m service users import URL``: users from a Flask tutorial app's database.

The source is a table ``user`` or ``users`` (or ``--table``) with ``username`` and/or ``email``,
optionally ``name`` and ``is_active``, and ``password`` (or ``password_hash``) holding a werkzeug
or flask-bcrypt hash, or plaintext. It is only read.

Decisions:

- Emails are required (the service logs in and deduplicates by them): a row without a valid
  email is reported and skipped, never given an invented address.
- A missing username is derived from the email's local part, made valid (letters, digits,
  ``_ . -``, 3 to 32) and suffixed with 2, 3, … while taken; an invalid one is cleaned the same
  way. Both are noted on the user's line.
- A username or email already in the service (in any letter case), or twice in the source, is
  reported and skipped, never overwritten. Re-running therefore imports nothing twice.
- Hashes the service verifies (werkzeug pbkdf2/scrypt, bcrypt, argon2) are stored as they are
  and upgraded to argon2id at the user's first login. Plaintext is hashed with argon2id here and
  never stored. A plaintext password outside the service's length rules is imported anyway (the
  user already has it; refusing would lock them out) and noted. Any other value that looks like
  a hash (werkzeug < 2.3 ``sha256$…``, ``$1$…``, a bare hex digest) is skipped: it cannot be
  verified, and taking it for plaintext would make the hash itself the password.
- Everything is written in one transaction after every plaintext is hashed, so the service's
  database is locked only briefly and an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import EmailStr, Field, TypeAdapter, ValidationError
from sqlalchemy import Column, MetaData, RowMapping, Table, create_engine, inspect, select
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from service.core.config import ConfigError
from service.core.passwords import PasswordHasher, normalize_password
from service.store.db import Database
from service.store.repository import DuplicateUser
from service.store.unit_of_work import UnitOfWork, unit_of_work
from service.web.schemas import PASSWORD_MAX, PASSWORD_MIN, USERNAME_PATTERN

SOURCE_TABLES = ("user", "users")
USERNAME_MIN, USERNAME_MAX = 3, 32
NAME_MAX = 100
HASH_MAX = 255  # the length of users.password_hash

_VALID_USERNAME = re.compile(USERNAME_PATTERN)
_USERNAME_INVALID_RUN = re.compile(r"[^A-Za-z0-9_.\-]+")
_EMAIL = TypeAdapter(Annotated[EmailStr, Field(max_length=254)])
# Values that are hashes in formats the service cannot verify: modular crypt ($1$, $5$, $6$,
# $pbkdf2-sha256$…), werkzeug's older "method$salt$hex" (sha256$…, plain$$…), bare hex digests.
_FOREIGN_HASH = re.compile(
    r"\$[0-9a-z-]{1,24}\$[./A-Za-z0-9$=,+-]{8,}"
    r"|[A-Za-z0-9_-]+(?::[^$\s]*)?\$[^$\s]*\$[0-9A-Fa-f]{32,}"
    r"|plain\$\$.*"
    r"|[0-9A-Fa-f]{32}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}|[0-9A-Fa-f]{128}"
)
# flask-bcrypt returns bytes; an app that stored str(bytes) left "b'$2b$…'".
_BYTES_REPR = re.compile(r"b'(\$2[aby]\$[^']*)'")


class SourceError(ConfigError):
    """The source cannot be read (connection, driver, missing table or columns): one line."""


@dataclass(frozen=True)
class SourceUser:
    """One row of the source table, as read."""

    ref: str  # "id 3" (its primary key) or "row 3"
    username: str | None
    email: str | None
    name: str | None
    password: str | bytes | None = field(repr=False)
    is_active: bool | None


@dataclass(frozen=True)
class SourceTable:
    name: str
    users: list[SourceUser]


@dataclass(frozen=True)
class Planned:
    """A row that will be imported."""

    source: SourceUser
    username: str
    email: str
    name: str | None
    is_active: bool
    password_hash: str | None  # a verifiable hash, stored as it is
    plaintext: str | None = field(repr=False)  # hashed just before writing, never stored
    notes: tuple[str, ...]

    def line(self, outcome: str) -> str:
        text = f"{outcome}: {self.username} <{self.email}> [{self.source.ref}]"
        return "; ".join((text, *self.notes))


@dataclass(frozen=True)
class Skipped:
    source: SourceUser
    reason: str

    def line(self) -> str:
        # Shown as read, so an unprintable value is escaped: one row stays one line.
        who = f" <{_printable(self.source.email)}>" if self.source.email else ""
        if not who and self.source.username:
            who = f" {_printable(self.source.username)}"
        return f"skipped: [{self.source.ref}]{who}: {self.reason}"


def _printable(value: str) -> str:
    return value if value.isprintable() else repr(value)


@dataclass(frozen=True)
class ImportReport:
    table: str
    lines: list[str]
    imported: int
    skipped: int
    dry_run: bool

    def render(self) -> str:
        verb = "would import" if self.dry_run else "imported"
        summary = (
            f"summary: {self.imported} {verb}, {self.skipped} skipped, "
            f"{self.imported + self.skipped} rows in table {self.table!r}"
        )
        if self.dry_run:
            summary += " (dry run: nothing written)"
        return "\n".join((*self.lines, summary))


async def import_users(
    database: Database,
    hasher: PasswordHasher,
    url: str,
    *,
    dry_run: bool = False,
    table: str | None = None,
) -> ImportReport:
    source = await read_source(url, table)
    async with unit_of_work(database) as uow:
        plan = await _plan(uow, hasher, source.users)
    if dry_run:
        outcomes: list[Planned | Skipped] = plan
    else:
        outcomes = await _write(database, hasher, plan)
    imported = sum(isinstance(item, Planned) for item in outcomes)
    verb = "would import" if dry_run else "imported"
    lines = [item.line(verb) if isinstance(item, Planned) else item.line() for item in outcomes]
    return ImportReport(source.name, lines, imported, len(outcomes) - imported, dry_run)


async def _write(
    database: Database, hasher: PasswordHasher, plan: list[Planned | Skipped]
) -> list[Planned | Skipped]:
    # Plaintexts are hashed before the write transaction opens, so the service's own writers
    # (logins, refreshes) wait for the inserts only, not for the hashing.
    hashes = await asyncio.gather(
        *(
            hasher.hash(item.plaintext)
            for item in plan
            if isinstance(item, Planned) and item.plaintext is not None
        )
    )
    new_hashes = iter(hashes)
    outcomes: list[Planned | Skipped] = []
    async with unit_of_work(database, write=True) as uow:
        for item in plan:
            if isinstance(item, Skipped):
                outcomes.append(item)
                continue
            kept = item.password_hash
            password_hash = kept if kept is not None else next(new_hashes)
            outcomes.append(await _insert(uow, item, password_hash))
        await uow.commit()
    return outcomes


async def _insert(uow: UnitOfWork, item: Planned, password_hash: str) -> Planned | Skipped:
    try:
        user = await uow.users.add(
            username=item.username,
            email=item.email,
            password_hash=password_hash,
            name=item.name,
        )
        if not item.is_active:
            user.is_active = False
            await uow.users.save()
    except DuplicateUser as exc:
        # Taken between the plan and the write (a signup meanwhile): the next run reports it.
        taken = exc.field or "username or email"
        return Skipped(item.source, f"{taken} registered meanwhile")
    return item


# Reading the source.


async def read_source(url: str, table: str | None = None) -> SourceTable:
    """The source table's rows; SourceError when it cannot be read."""
    try:
        parsed = make_url(url)
    except SQLAlchemyError:
        raise SourceError("the source is not a SQLAlchemy URL (dialect+driver://…)") from None
    shown = parsed.render_as_string(hide_password=True)
    _require_sqlite_file(parsed)
    try:
        if parsed.get_dialect().is_async:
            engine = create_async_engine(parsed)
            try:
                async with engine.connect() as connection:
                    return await connection.run_sync(_read_table, table)
            finally:
                await engine.dispose()
        return await asyncio.to_thread(_read_sync, parsed, table)
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        detail = str(orig if orig is not None else exc).strip().splitlines()[0]
        raise SourceError(f"cannot read {shown}: {detail}") from None
    except ImportError as exc:
        raise SourceError(f"the driver for {shown} is not installed: {exc.name or exc}") from None


def _require_sqlite_file(url: URL) -> None:
    # SQLite would create a missing file: a typo must not read as "an empty source".
    if url.get_backend_name() != "sqlite":
        return
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    if not Path(database).is_file():
        raise SourceError(f"no SQLite database at {database}")


def _read_sync(url: URL, table: str | None) -> SourceTable:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return _read_table(connection, table)
    finally:
        engine.dispose()


def _read_table(connection: Connection, wanted: str | None) -> SourceTable:
    names = inspect(connection).get_table_names()
    name = _pick_table(names, wanted)
    source = Table(name, MetaData(), autoload_with=connection)
    columns = {column.name.lower(): column for column in source.columns}
    password = columns.get("password", columns.get("password_hash"))
    if password is None:
        raise SourceError(f"table {name!r} has no password (or password_hash) column")
    username, email = columns.get("username"), columns.get("email")
    if username is None and email is None:
        raise SourceError(f"table {name!r} has neither a username nor an email column")
    name_column, active = columns.get("name"), columns.get("is_active")
    primary = list(source.primary_key.columns)
    wanted_columns = [username, email, name_column, password, active, *primary]
    # Only these columns: others (dates, blobs) may hold values their reflected type refuses.
    needed = list({column.name: column for column in wanted_columns if column is not None}.values())
    query = select(*needed).order_by(*primary)
    users = []
    for position, row in enumerate(connection.execute(query).mappings(), start=1):
        key = row[primary[0]] if len(primary) == 1 else None
        ref = f"{primary[0].name} {_printable(str(key))}" if key is not None else f"row {position}"
        users.append(
            SourceUser(
                ref=ref,
                username=_text(row, username),
                email=_text(row, email),
                name=_text(row, name_column),
                password=_raw(row, password),
                is_active=None if active is None or row[active] is None else bool(row[active]),
            )
        )
    return SourceTable(name, users)


def _pick_table(names: Sequence[str], wanted: str | None) -> str:
    by_lower = {name.lower(): name for name in names}
    if wanted is not None:
        if wanted.lower() not in by_lower:
            raise SourceError(f"no table {wanted!r} in the source")
        return by_lower[wanted.lower()]
    found = [by_lower[candidate] for candidate in SOURCE_TABLES if candidate in by_lower]
    if not found:
        raise SourceError("the source has no 'user' or 'users' table (use --table)")
    if len(found) > 1:
        raise SourceError("the source has both 'user' and 'users' tables: choose with --table")
    return found[0]


def _raw(row: RowMapping, column: Column[Any] | None) -> Any:
    return None if column is None else row[column]


def _text(row: RowMapping, column: Column[Any] | None) -> str | None:
    value = _raw(row, column)
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = str(value).strip()
    return text or None


# Mapping rows to users of the service.


async def _plan(
    uow: UnitOfWork, hasher: PasswordHasher, users: Sequence[SourceUser]
) -> list[Planned | Skipped]:
    """What happens to each row, checked against the service and the rows before it."""
    seen_emails: dict[str, str] = {}
    seen_usernames: set[str] = set()

    async def username_taken(candidate: str) -> bool:
        lowered = candidate.lower()
        return lowered in seen_usernames or await uow.users.by_login(lowered) is not None

    plan: list[Planned | Skipped] = []
    for source in users:
        outcome = await _plan_one(uow, hasher, source, seen_emails, username_taken)
        if isinstance(outcome, Planned):
            seen_emails[outcome.email] = source.ref
            seen_usernames.add(outcome.username.lower())
        plan.append(outcome)
    return plan


async def _plan_one(
    uow: UnitOfWork,
    hasher: PasswordHasher,
    source: SourceUser,
    seen_emails: dict[str, str],
    username_taken: Callable[[str], Awaitable[bool]],
) -> Planned | Skipped:
    if source.email is None:
        return Skipped(source, "no email address (the service requires one)")
    try:
        email = _EMAIL.validate_python(source.email).lower()
    except ValidationError:
        return Skipped(source, "not a valid email address")
    if email in seen_emails:
        return Skipped(source, f"same email as [{seen_emails[email]}] above")
    existing = await uow.users.by_login(email)
    if existing is not None:
        return Skipped(source, f"email already registered (user {existing.username})")

    password = classify_password(source.password, hasher)
    if isinstance(password, str):
        return Skipped(source, password)
    password_hash, plaintext, notes = password

    if source.username is not None and _VALID_USERNAME.fullmatch(source.username):
        username = source.username
        if await username_taken(username):
            return Skipped(source, f"username {username} already taken")
    else:
        base = derive_username(source.username or email.split("@", 1)[0])
        username = base
        suffix = 2
        while await username_taken(username):
            username = with_suffix(base, suffix)
            suffix += 1
        notes = (
            (f"username derived from the email as {username}",)
            if source.username is None
            else (f"username {source.username!r} is not valid here: imported as {username}",)
        ) + notes

    name, name_notes = _display_name(source.name)
    active = source.is_active is not False
    status = () if active else ("disabled in the source: imported disabled",)
    return Planned(
        source=source,
        username=username,
        email=email,
        name=name,
        is_active=active,
        password_hash=password_hash,
        plaintext=plaintext,
        notes=(*notes, *name_notes, *status),
    )


PasswordPlan = tuple[str | None, str | None, tuple[str, ...]]


def classify_password(value: str | bytes | None, hasher: PasswordHasher) -> PasswordPlan | str:
    """``(hash to keep, plaintext to hash, notes)``, or the reason the row is skipped."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return "the password column holds bytes that are not text"
    if value is None or value == "":
        return "no password"
    unwrapped = _BYTES_REPR.fullmatch(value)
    candidate = unwrapped[1] if unwrapped else value
    if hasher.recognizes(candidate):
        if len(candidate) > HASH_MAX:
            return f"password hash longer than {HASH_MAX} characters"
        return candidate, None, ()
    if _FOREIGN_HASH.fullmatch(candidate):
        return "password is a hash in a format the service cannot verify: the user must reset it"
    length = len(normalize_password(value))
    notes = ["plaintext password (hashed with argon2id, never stored)"]
    if not PASSWORD_MIN <= length <= PASSWORD_MAX:
        notes.append(
            f"password has {length} characters, outside {PASSWORD_MIN}-{PASSWORD_MAX}: "
            "imported anyway, ask the user to change it"
        )
    return None, value, tuple(notes)


def derive_username(source: str) -> str:
    """A valid username from an email's local part (or an invalid username)."""
    ascii_form = unicodedata.normalize("NFKD", source).encode("ascii", "ignore").decode()
    cleaned = _USERNAME_INVALID_RUN.sub("_", ascii_form).strip("._-")[:USERNAME_MAX]
    if len(cleaned) < USERNAME_MIN:
        cleaned = f"{cleaned}_user" if cleaned else "user"
    return cleaned


def with_suffix(base: str, number: int) -> str:
    suffix = str(number)
    return base[: USERNAME_MAX - len(suffix)] + suffix


def _display_name(value: str | None) -> tuple[str | None, tuple[str, ...]]:
    if value is None:
        return None, ()
    if any(unicodedata.category(char) == "Cc" for char in value):
        return None, ("name has control characters: not imported",)
    if len(value) > NAME_MAX:
        return value[:NAME_MAX].rstrip(), (f"name shortened to {NAME_MAX} characters",)
    return value, ()
