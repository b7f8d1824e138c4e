"""Integration tests on a real SQLite file: the user repository and the auth use cases."""

from __future__ import annotations

import itertools
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import bcrypt
import pytest
from sqlalchemy import select

from service.accounts import Accounts, ClientInfo
from service.core.config import Settings
from service.core.errors import AccountDisabled, InvalidCredentials, TokenInvalid, UserExists
from service.core.keys import token_settings
from service.core.passwords import PasswordHasher
from service.core.tokens import Claims
from service.store import migrations
from service.store.db import Database
from service.store.models import User
from service.store.repository import DuplicateUser, UserRepository
from tests.support import PASSWORD, make_settings

BUSY_TIMEOUT_MS = 4321


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, sqlite_busy_timeout_ms=BUSY_TIMEOUT_MS)


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    db = Database(settings)
    try:
        await migrations.upgrade(db)
        yield db
    finally:
        await db.dispose()


@pytest.fixture
def hasher(settings: Settings) -> Iterator[PasswordHasher]:
    password_hasher = PasswordHasher(settings)
    yield password_hasher
    password_hasher.close()


@pytest.fixture
def accounts(settings: Settings, database: Database, hasher: PasswordHasher) -> Accounts:
    return Accounts(database=database, hasher=hasher, tokens=token_settings(settings))


async def add_user(
    database: Database,
    *,
    username: str = "alice",
    email: str = "alice@example.com",
    password_hash: str = "$argon2id$not-a-real-hash",
    commit: bool = True,
) -> User:
    async with database.session(write=True) as session:
        user = await UserRepository(session).add(
            username=username, email=email, password_hash=password_hash
        )
        if commit:
            await session.commit()
        return user


async def load(database: Database, login: str) -> User | None:
    async with database.session(write=False) as session:
        return await UserRepository(session).by_login(login)


def claims_for(subject: str) -> Claims:
    return Claims(
        subject=subject,
        token_type="access",
        jti=uuid.uuid4().hex,
        issued_at=0,
        expires_at=0,
        fresh=False,
        roles=(),
        raw={},
    )


# --- repository ---------------------------------------------------------------------------------


async def test_added_user_is_found_by_id_username_and_email(database: Database) -> None:
    async with database.session(write=True) as session:
        users = UserRepository(session)
        added = await users.add(
            username="Alice",
            email="Alice@Example.COM",
            password_hash="$argon2id$x",
            name="Alice Liddell",
            roles=["reader", "admin", "reader"],
        )
        await session.commit()

    async with database.session(write=False) as session:
        users = UserRepository(session)
        by_id = await users.by_id(added.id)
        by_username = await users.by_login("aLICE")
        by_email = await users.by_login("ALICE@example.com")

    assert by_id is not None
    assert by_id.id == added.id
    assert by_id.username == "Alice"
    assert by_id.email == "alice@example.com"
    assert by_id.name == "Alice Liddell"
    assert by_id.roles == ["admin", "reader"]
    assert by_id.is_active is True
    assert by_id.created_at.tzinfo is not None
    assert by_username is not None
    assert by_username.id == added.id
    assert by_email is not None
    assert by_email.id == added.id


async def test_unknown_user_is_none(database: Database) -> None:
    await add_user(database)

    async with database.session(write=False) as session:
        users = UserRepository(session)
        assert await users.by_id(uuid.uuid4()) is None
        assert await users.by_login("bob") is None
        assert await users.by_login("bob@example.com") is None
        # A username is not looked up as an email, nor an email as a username.
        assert await users.by_login("alice@example.org") is None


async def test_username_taken_in_another_letter_case_is_a_duplicate(database: Database) -> None:
    await add_user(database, username="alice", email="alice@example.com")

    async with database.session(write=True) as session:
        with pytest.raises(DuplicateUser) as caught:
            await UserRepository(session).add(
                username="ALICE", email="someone-else@example.com", password_hash="$argon2id$x"
            )

    assert caught.value.field == "username"


async def test_email_taken_in_another_letter_case_is_a_duplicate(database: Database) -> None:
    await add_user(database, username="alice", email="alice@example.com")

    async with database.session(write=True) as session:
        with pytest.raises(DuplicateUser) as caught:
            await UserRepository(session).add(
                username="bob", email="Alice@EXAMPLE.com", password_hash="$argon2id$x"
            )

    assert caught.value.field == "email"


async def test_duplicate_leaves_the_session_usable(database: Database) -> None:
    async with database.session(write=True) as session:
        users = UserRepository(session)
        first = await users.add(username="alice", email="a@example.com", password_hash="h")
        with pytest.raises(DuplicateUser):
            await users.add(username="Alice", email="b@example.com", password_hash="h")
        second = await users.add(username="bob", email="b@example.com", password_hash="h")
        await session.commit()

    async with database.session(write=False) as session:
        rows = (await session.execute(select(User.username, User.email).order_by(User.pk))).all()
    # Only the failed insert was rolled back: both good users are kept, the duplicate is not.
    assert [tuple(row) for row in rows] == [("alice", "a@example.com"), ("bob", "b@example.com")]
    assert first.id != second.id


async def test_repository_never_commits(database: Database) -> None:
    await add_user(database, commit=False)

    assert await load(database, "alice") is None


async def test_committed_user_is_visible_to_a_new_session(database: Database) -> None:
    added = await add_user(database, commit=True)

    found = await load(database, "alice")

    assert found is not None
    assert found.id == added.id


async def test_sqlite_file_is_in_wal_mode_with_busy_timeout(
    database: Database, tmp_path: Path
) -> None:
    for engine in (database.reader, database.writer):
        async with engine.connect() as connection:
            journal_mode = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
            busy_timeout = (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar()
            foreign_keys = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar()

        assert journal_mode == "wal"
        assert busy_timeout == BUSY_TIMEOUT_MS
        assert foreign_keys == 1
    # WAL is a property of the file, seen by a plain connection that sets no pragmas.
    plain = sqlite3.connect(tmp_path / "auth.db")
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        plain.close()


async def test_exposed_id_is_a_random_uuid4_unrelated_to_the_integer_key(
    database: Database,
) -> None:
    added = [
        await add_user(database, username=f"user{n}", email=f"user{n}@example.com")
        for n in range(5)
    ]

    async with database.session(write=False) as session:
        rows = (await session.execute(select(User.pk, User.id).order_by(User.pk))).all()
        users = UserRepository(session)
        for pk, _ in rows:
            # Guessing an id from the integer key finds nobody.
            assert await users.by_id(uuid.UUID(int=pk)) is None

    pks = [pk for pk, _ in rows]
    ids = [user_id for _, user_id in rows]
    assert ids == [user.id for user in added]
    assert pks == sorted(pks)
    assert len(set(ids)) == len(ids)
    for pk, user_id in rows:
        assert isinstance(user_id, uuid.UUID)
        assert user_id.version == 4
        assert user_id.variant == uuid.RFC_4122
        assert user_id.int != pk
    # Consecutive keys do not give neighbouring ids.
    assert any(abs(b.int - a.int) > 2**64 for a, b in itertools.pairwise(ids))


# --- use cases ----------------------------------------------------------------------------------


async def test_register_then_authenticate_by_username_or_email(
    database: Database, accounts: Accounts
) -> None:
    registered = await accounts.register(
        username="alice", email="Alice@Example.com", password=PASSWORD
    )

    by_username = await accounts.verify_credentials("ALICE", PASSWORD, client=ClientInfo())
    by_email = await accounts.verify_credentials("alice@EXAMPLE.com", PASSWORD, client=ClientInfo())

    assert by_username.id == registered.id
    assert by_email.id == registered.id
    assert registered.password_hash.startswith("$argon2id$")
    assert PASSWORD not in registered.password_hash


async def test_register_taken_username_raises_user_exists(
    database: Database, accounts: Accounts
) -> None:
    await accounts.register(username="alice", email="alice@example.com", password=PASSWORD)

    with pytest.raises(UserExists) as caught:
        await accounts.register(username="Alice", email="other@example.com", password=PASSWORD)

    assert caught.value.detail == "This username is taken."


async def test_authenticate_wrong_password_is_invalid_credentials(
    database: Database, accounts: Accounts
) -> None:
    await accounts.register(username="alice", email="alice@example.com", password=PASSWORD)

    with pytest.raises(InvalidCredentials):
        await accounts.verify_credentials("alice", "wrong password", client=ClientInfo())


async def test_authenticate_unknown_user_is_invalid_credentials(
    database: Database, accounts: Accounts
) -> None:
    with pytest.raises(InvalidCredentials):
        await accounts.verify_credentials("nobody", PASSWORD, client=ClientInfo())


async def test_authenticate_disabled_user_is_invalid_credentials(
    database: Database, accounts: Accounts
) -> None:
    await accounts.register(username="alice", email="alice@example.com", password=PASSWORD)
    disabled = await accounts.set_active("alice", active=False)
    assert disabled.is_active is False

    with pytest.raises(InvalidCredentials):
        await accounts.verify_credentials("alice", PASSWORD, client=ClientInfo())

    await accounts.set_active("alice", active=True)
    assert (await accounts.verify_credentials("alice", PASSWORD, client=ClientInfo())).is_active


async def test_bcrypt_user_gets_an_argon2id_hash_after_authenticating(
    database: Database, accounts: Accounts
) -> None:
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    registered = await add_user(database, password_hash=legacy)

    authenticated = await accounts.verify_credentials("alice", PASSWORD, client=ClientInfo())

    assert authenticated.id == registered.id
    stored = await load(database, "alice")
    assert stored is not None
    assert stored.password_hash != legacy
    assert stored.password_hash.startswith("$argon2id$")
    assert (await accounts.hasher.verify(PASSWORD, stored.password_hash)).ok is True
    again = await accounts.verify_credentials("alice", PASSWORD, client=ClientInfo())
    assert again.id == registered.id


async def test_bcrypt_user_with_a_wrong_password_keeps_the_bcrypt_hash(
    database: Database, accounts: Accounts
) -> None:
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    await add_user(database, password_hash=legacy)

    with pytest.raises(InvalidCredentials):
        await accounts.verify_credentials("alice", "wrong password", client=ClientInfo())

    stored = await load(database, "alice")
    assert stored is not None
    assert stored.password_hash == legacy


async def test_user_for_returns_the_active_user(database: Database, accounts: Accounts) -> None:
    registered = await accounts.register(
        username="alice", email="alice@example.com", password=PASSWORD
    )

    user = await accounts.user_for(claims_for(str(registered.id)))

    assert user.id == registered.id


async def test_user_for_refuses_a_disabled_user(database: Database, accounts: Accounts) -> None:
    registered = await accounts.register(
        username="alice", email="alice@example.com", password=PASSWORD
    )
    await accounts.set_active("alice", active=False)

    with pytest.raises(AccountDisabled):
        await accounts.user_for(claims_for(str(registered.id)))


async def test_user_for_refuses_a_deleted_user(database: Database, accounts: Accounts) -> None:
    registered = await accounts.register(
        username="alice", email="alice@example.com", password=PASSWORD
    )
    async with database.session(write=True) as session:
        user = await UserRepository(session).by_id(registered.id)
        assert user is not None
        await session.delete(user)
        await session.commit()

    with pytest.raises(TokenInvalid):
        await accounts.user_for(claims_for(str(registered.id)))


@pytest.mark.parametrize("subject", [str(uuid.uuid4()), "not-a-uuid", "", "1"])
async def test_user_for_refuses_an_unknown_subject(
    database: Database, accounts: Accounts, subject: str
) -> None:
    await add_user(database)

    with pytest.raises(TokenInvalid):
        await accounts.user_for(claims_for(subject))
