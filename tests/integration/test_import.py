"""python -m service users import: users of the three seed Flask apps log in with old passwords."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
from werkzeug.security import generate_password_hash

from service.core.config import Settings
from service.core.passwords import PasswordHasher
from service.ops import cli
from service.ops.importer import (
    ImportReport,
    classify_password,
    derive_username,
    import_users,
    with_suffix,
)
from service.web.state import get_state
from tests.commands import Finished, InProcessCommand
from tests.servers import run_service_command
from tests.support import PASSWORD, Client, make_settings, running_app

# The seed apps' schemas, as their tutorials create them.
FLASK_LOGIN_SCHEMA = (
    "CREATE TABLE user (id INTEGER PRIMARY KEY, email VARCHAR(100) UNIQUE, "
    "password VARCHAR(100), name VARCHAR(1000))"
)
ImportCommand = Callable[..., Awaitable[Finished]]
JWT_EXTENDED_SCHEMA = (
    "CREATE TABLE user (id INTEGER PRIMARY KEY, email VARCHAR(120) UNIQUE NOT NULL, "
    "password VARCHAR(80) NOT NULL, is_active BOOLEAN NOT NULL)"
)


def public_id_schema(login_column: str) -> str:
    return (
        "CREATE TABLE users (id INTEGER PRIMARY KEY, public_id VARCHAR(50) UNIQUE, "
        f"{login_column} VARCHAR(50), email VARCHAR(70) UNIQUE, password VARCHAR(80))"
    )


@dataclass(frozen=True)
class StoredUser:
    username: str
    email: str
    name: str | None
    password_hash: str
    is_active: bool


def make_source(path: Path, schema: str, rows: Sequence[dict[str, object]]) -> str:
    """A source database with ``schema`` and ``rows``; its SQLAlchemy URL."""
    table = schema.split()[2]
    with sqlite3.connect(path) as connection:
        connection.execute(schema)
        for row in rows:
            columns = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            connection.execute(
                f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(row.values())
            )
    connection.close()
    return f"sqlite:///{path}"


@pytest.fixture
def run_import(service_command: InProcessCommand) -> ImportCommand:
    """``users import ARGS`` in this process, into the service's database ``tmp_path/auth.db``."""

    async def run(*args: str) -> Finished:
        return await service_command("users", "import", *args)

    return run


def stored_users(tmp_path: Path) -> dict[str, StoredUser]:
    """The service's users by username, read straight from its SQLite file."""
    with sqlite3.connect(tmp_path / "auth.db") as connection:
        rows = connection.execute(
            "SELECT username, email, name, password_hash, is_active FROM users"
        ).fetchall()
    connection.close()
    return {row[0]: StoredUser(row[0], row[1], row[2], row[3], bool(row[4])) for row in rows}


def database_bytes(tmp_path: Path) -> bytes:
    """Every byte of the service's SQLite database: the file, its WAL and shared memory."""
    return b"".join(path.read_bytes() for path in sorted(tmp_path.glob("auth.db*")))


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def login(client: Client, username: str, password: str) -> int:
    response = await client.post("/login", json={"username": username, "password": password})
    return response.status_code


def bcrypt_text(password: str) -> str:
    """What flask-bcrypt's generate_password_hash(...).decode() stores, at rounds=4."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture
def hasher(settings: Settings) -> Iterator[PasswordHasher]:
    password_hasher = PasswordHasher(settings)
    yield password_hasher
    password_hasher.close()


# Seed app 1: the Flask-Login tutorial (werkzeug hashes, no username column).


async def test_flask_login_tutorial_users_log_in_with_their_werkzeug_passwords(
    tmp_path: Path, run_import: ImportCommand
) -> None:
    source = make_source(
        tmp_path / "flask_login.db",
        FLASK_LOGIN_SCHEMA,
        [
            {
                "email": "alice@example.com",
                "password": generate_password_hash("alice in wonderland", "pbkdf2:sha256:1000"),
                "name": "Alice Liddell",
            },
            {
                "email": "Bob@Example.com",
                "password": generate_password_hash("bob the builder", "scrypt"),
                "name": "Bob",
            },
            {
                "email": "carol@example.com",
                "password": generate_password_hash("\ufb01ne carol", "scrypt:1024:8:1"),
                "name": None,
            },
        ],
    )

    result = await run_import(source)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "imported: alice <alice@example.com> [id 1]; username derived from the email as alice",
        "imported: bob <bob@example.com> [id 2]; username derived from the email as bob",
        "imported: carol <carol@example.com> [id 3]; username derived from the email as carol",
        "summary: 3 imported, 0 skipped, 3 rows in table 'user'",
    ]
    before = stored_users(tmp_path)
    assert before["alice"].password_hash.startswith("pbkdf2:sha256:1000$")
    assert before["bob"].password_hash.startswith("scrypt:32768:8:1$")
    assert before["alice"].name == "Alice Liddell"
    assert before["bob"].email == "bob@example.com"

    async with running_app(make_settings(tmp_path)) as app:
        client = app.test_client()
        assert await login(client, "alice", "wrong password") == 401
        assert await login(client, "alice", "alice in wonderland") == 200
        assert await login(client, "Bob@Example.com", "bob the builder") == 200
        assert await login(client, "carol", "\ufb01ne carol") == 200
        after = stored_users(tmp_path)
        assert await login(client, "alice@example.com", "alice in wonderland") == 200
        assert await login(client, "carol", "fine carol") == 200  # NFKC, once upgraded

    assert all(user.password_hash.startswith("$argon2id$") for user in after.values())


# Seed app 2: Flask-JWT-Extended / 4Geeks (plaintext passwords, is_active).

PLAINTEXTS = {
    "ana@4geeks.co": "ana-plaintext-password",
    "ben@4geeks.co": "1234",
    "cy@4geeks.co": "cy-plaintext-password",
}
JWT_EXTENDED_ROWS: list[dict[str, object]] = [
    {"email": "ana@4geeks.co", "password": PLAINTEXTS["ana@4geeks.co"], "is_active": True},
    {"email": "ben@4geeks.co", "password": PLAINTEXTS["ben@4geeks.co"], "is_active": True},
    {"email": "cy@4geeks.co", "password": PLAINTEXTS["cy@4geeks.co"], "is_active": False},
]


async def test_plaintext_users_are_hashed_and_log_in(
    tmp_path: Path, run_import: ImportCommand
) -> None:
    source = make_source(tmp_path / "jwt.db", JWT_EXTENDED_SCHEMA, JWT_EXTENDED_ROWS)

    result = await run_import(source)

    assert result.returncode == 0, result.stderr
    plaintext = "plaintext password (hashed with argon2id, never stored)"
    assert result.stdout.splitlines() == [
        f"imported: ana <ana@4geeks.co> [id 1]; username derived from the email as ana; "
        f"{plaintext}",
        f"imported: ben <ben@4geeks.co> [id 2]; username derived from the email as ben; "
        f"{plaintext}; password has 4 characters, outside 8-128: imported anyway, "
        "ask the user to change it",
        f"imported: cy_user <cy@4geeks.co> [id 3]; username derived from the email as cy_user; "
        f"{plaintext}; disabled in the source: imported disabled",
        "summary: 3 imported, 0 skipped, 3 rows in table 'user'",
    ]
    users = stored_users(tmp_path)
    assert {user.email: user.is_active for user in users.values()} == {
        "ana@4geeks.co": True,
        "ben@4geeks.co": True,
        "cy@4geeks.co": False,
    }
    # Plaintext is never kept: not in any stored hash, nor anywhere in the database files.
    stored_bytes = database_bytes(tmp_path)
    for user in users.values():
        assert user.password_hash.startswith("$argon2id$")
    for secret in PLAINTEXTS.values():
        assert all(secret not in user.password_hash for user in users.values())
        assert secret.encode() not in stored_bytes
        assert secret not in result.stdout

    async with running_app(make_settings(tmp_path)) as app:
        client = app.test_client()
        assert await login(client, "ana", PLAINTEXTS["ana@4geeks.co"]) == 200
        assert await login(client, "ben@4geeks.co", PLAINTEXTS["ben@4geeks.co"]) == 200
        assert await login(client, "cy@4geeks.co", PLAINTEXTS["cy@4geeks.co"]) == 401  # disabled
        assert await login(client, "ana", "wrong password") == 401


# Seed app 3: a users table with public_id and flask-bcrypt hashes.


@pytest.mark.parametrize("login_column", ["username", "name"])
async def test_flask_bcrypt_users_log_in_and_are_upgraded(
    tmp_path: Path, run_import: ImportCommand, login_column: str
) -> None:
    source = make_source(
        tmp_path / "bcrypt.db",
        public_id_schema(login_column),
        [
            {
                "public_id": "7d3c1f0e",
                login_column: "Dana_K",
                "email": "dana@example.com",
                "password": bcrypt_text("dana's bcrypt password"),
            },
            {
                # flask-bcrypt returns bytes; apps that forgot .decode() stored them as a BLOB.
                "public_id": "9a8b7c6d",
                login_column: "Eve",
                "email": "eve@example.com",
                "password": bcrypt_text("eve's bcrypt password").encode(),
            },
        ],
    )

    result = await run_import(source)

    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.splitlines()[-1] == "summary: 2 imported, 0 skipped, 2 rows in table 'users'"
    )
    users = stored_users(tmp_path)
    if login_column == "username":
        assert set(users) == {"Dana_K", "Eve"}
        assert users["Dana_K"].name is None
        dana, eve = "Dana_K", "Eve"
    else:
        assert set(users) == {"dana", "eve"}
        assert users["dana"].name == "Dana_K"
        dana, eve = "dana", "eve"
    assert users[dana].password_hash.startswith("$2b$04$")
    assert users[eve].password_hash.startswith("$2b$04$")

    async with running_app(make_settings(tmp_path)) as app:
        client = app.test_client()
        assert await login(client, dana.lower(), "dana's bcrypt password") == 200
        assert await login(client, "eve@example.com", "eve's bcrypt password") == 200
        assert await login(client, eve, "not eve's password") == 401
        upgraded = stored_users(tmp_path)
        assert await login(client, dana, "dana's bcrypt password") == 200

    assert upgraded[dana].password_hash.startswith("$argon2id$")
    assert upgraded[eve].password_hash.startswith("$argon2id$")


# Dry run, re-runs and conflicts.


async def test_dry_run_reports_and_writes_nothing(
    tmp_path: Path, run_import: ImportCommand
) -> None:
    source_path = tmp_path / "jwt.db"
    source = make_source(source_path, JWT_EXTENDED_SCHEMA, JWT_EXTENDED_ROWS)
    digest = file_digest(source_path)

    dry = await run_import(source, "--dry-run")

    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert [line.split(";")[0] for line in lines[:-1]] == [
        "would import: ana <ana@4geeks.co> [id 1]",
        "would import: ben <ben@4geeks.co> [id 2]",
        "would import: cy_user <cy@4geeks.co> [id 3]",
    ]
    assert lines[-1] == (
        "summary: 3 would import, 0 skipped, 3 rows in table 'user' (dry run: nothing written)"
    )
    assert stored_users(tmp_path) == {}
    assert file_digest(source_path) == digest

    real = await run_import(source)

    assert real.stdout.splitlines()[-1] == "summary: 3 imported, 0 skipped, 3 rows in table 'user'"
    assert file_digest(source_path) == digest


async def test_a_second_run_imports_nothing_and_reports_skips(
    tmp_path: Path, run_import: ImportCommand
) -> None:
    source = make_source(tmp_path / "jwt.db", JWT_EXTENDED_SCHEMA, JWT_EXTENDED_ROWS)
    first = await run_import(source)
    assert first.returncode == 0, first.stderr
    before = stored_users(tmp_path)

    second = await run_import(source)

    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [
        "skipped: [id 1] <ana@4geeks.co>: email already registered (user ana)",
        "skipped: [id 2] <ben@4geeks.co>: email already registered (user ben)",
        "skipped: [id 3] <cy@4geeks.co>: email already registered (user cy_user)",
        "summary: 0 imported, 3 skipped, 3 rows in table 'user'",
    ]
    assert stored_users(tmp_path) == before


async def test_conflicting_service_users_are_reported_and_not_changed(
    tmp_path: Path, run_import: ImportCommand
) -> None:
    async with running_app(make_settings(tmp_path)) as app:
        client = app.test_client()
        for username, email in (("alice", "ALICE@example.com"), ("dana_k", "dk@service.io")):
            response = await client.post(
                "/signup", json={"username": username, "email": email, "password": PASSWORD}
            )
            assert response.status_code == 201
    before = stored_users(tmp_path)
    source = make_source(
        tmp_path / "bcrypt.db",
        public_id_schema("username"),
        [
            {
                "public_id": "1",
                "username": "alice_from_flask",
                "email": "Alice@Example.com",
                "password": bcrypt_text("alice's old password"),
            },
            {
                "public_id": "2",
                "username": "Dana_K",
                "email": "dana@example.com",
                "password": bcrypt_text("dana's old password"),
            },
            {
                "public_id": "3",
                "username": "frank",
                "email": "frank@example.com",
                "password": bcrypt_text("frank's old password"),
            },
        ],
    )

    result = await run_import(source)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "skipped: [id 1] <Alice@Example.com>: email already registered (user alice)",
        "skipped: [id 2] <dana@example.com>: username Dana_K already taken",
        "imported: frank <frank@example.com> [id 3]",
        "summary: 1 imported, 2 skipped, 3 rows in table 'users'",
    ]
    after = stored_users(tmp_path)
    assert {name: after[name] for name in before} == before
    async with running_app(make_settings(tmp_path)) as app:
        client = app.test_client()
        assert await login(client, "alice", PASSWORD) == 200
        assert await login(client, "alice", "alice's old password") == 401
        assert await login(client, "dana_k", "dana's old password") == 401
        assert await login(client, "frank", "frank's old password") == 200


# Errors: one line on stderr, exit status 1.


def source_with(tmp_path: Path, *statements: str) -> str:
    path = tmp_path / "source.db"
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement)
    connection.close()
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    ("make_url", "message"),
    [
        (
            lambda tmp: f"sqlite:///{tmp / 'missing.db'}",
            "error: no SQLite database at {tmp}/missing.db",
        ),
        (lambda tmp: "not a url", "error: the source is not a SQLAlchemy URL (dialect+driver://…)"),
        (
            lambda tmp: source_with(tmp, "CREATE TABLE account (id INTEGER PRIMARY KEY)"),
            "error: the source has no 'user' or 'users' table (use --table)",
        ),
        (
            lambda tmp: source_with(
                tmp, "CREATE TABLE user (id INTEGER PRIMARY KEY)", "CREATE TABLE users (id INT)"
            ),
            "error: the source has both 'user' and 'users' tables: choose with --table",
        ),
        (
            lambda tmp: source_with(tmp, "CREATE TABLE user (id INTEGER PRIMARY KEY, email TEXT)"),
            "error: table 'user' has no password (or password_hash) column",
        ),
        (
            lambda tmp: source_with(tmp, "CREATE TABLE users (id INT, name TEXT, password TEXT)"),
            "error: table 'users' has neither a username nor an email column",
        ),
    ],
    ids=["missing-file", "bad-url", "no-table", "two-tables", "no-password", "no-login"],
)
def test_a_source_that_cannot_be_read_is_one_line_and_status_1(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_url: Callable[[Path], str],
    message: str,
) -> None:
    url = make_url(tmp_path)
    monkeypatch.setenv("AUTH_ENV", "testing")
    monkeypatch.setenv("AUTH_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}")

    status = cli.main(["users", "import", url])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.err == message.format(tmp=tmp_path) + "\n"
    assert captured.out == ""
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.slow
def test_a_file_that_is_not_a_database_fails_in_a_subprocess(tmp_path: Path) -> None:
    # The whole command as a process: the one line and the status are all it leaves behind.
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_text("these are not the tables you are looking for\n" * 100)

    result = run_service_command(tmp_path, "users", "import", f"sqlite:///{not_a_database}")

    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        result.stderr == f"error: cannot read sqlite:///{not_a_database}: file is not a database\n"
    )


# The mapping, in process.


async def run_in_process(
    tmp_path: Path, schema: str, rows: Sequence[dict[str, object]]
) -> ImportReport:
    source = make_source(tmp_path / "source.db", schema, rows)
    async with running_app(make_settings(tmp_path)) as app:
        state = get_state(app)
        return await import_users(state.accounts.database, state.accounts.hasher, source)


async def test_derived_usernames_are_made_unique(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path)) as app:
        response = await app.test_client().post(
            "/signup", json={"username": "ALICE", "email": "a@service.io", "password": PASSWORD}
        )
        assert response.status_code == 201
    rows: list[dict[str, object]] = [
        {"email": "alice@one.io", "password": "first password"},
        {"email": "Alice@two.io", "password": "second password"},
        {"email": "j\u00f6rg+news@three.io", "password": "third password"},
    ]

    report = await run_in_process(tmp_path, JWT_EXTENDED_SCHEMA.replace(" NOT NULL", ""), rows)

    assert [line.split(";")[0] for line in report.lines] == [
        "imported: alice2 <alice@one.io> [id 1]",
        "imported: alice3 <alice@two.io> [id 2]",
        "imported: jorg_news <j\u00f6rg+news@three.io> [id 3]",
    ]
    assert (report.imported, report.skipped) == (3, 0)


async def test_rows_without_a_usable_email_or_password_are_skipped(tmp_path: Path) -> None:
    schema = (
        "CREATE TABLE users (id INTEGER PRIMARY KEY, username VARCHAR(80), email VARCHAR(120), "
        "password VARCHAR(200))"
    )
    rows: list[dict[str, object]] = [
        {"username": "nomail", "email": None, "password": "some password"},
        {"username": "badmail", "email": "not-an-email", "password": "some password"},
        {"username": "nopass", "email": "nopass@example.com", "password": ""},
        {"username": "old", "email": "old@example.com", "password": "sha256$salt$" + "ab" * 32},
        {
            "username": "md5",
            "email": "md5@example.com",
            "password": "5f4dcc3b5aa765d61d8327deb882cf99",
        },
        {"username": "twin", "email": "twin@example.com", "password": "some password"},
        {"username": "TWIN", "email": "twin2@example.com", "password": "some password"},
        {"username": "twin3", "email": "TWIN@example.com", "password": "some password"},
        {"username": "Jo Doe", "email": "jo@example.com", "password": "some password"},
    ]

    report = await run_in_process(tmp_path, schema, rows)

    unverifiable = (
        "password is a hash in a format the service cannot verify: the user must reset it"
    )
    assert [line.split(";")[0] for line in report.lines] == [
        "skipped: [id 1] nomail: no email address (the service requires one)",
        "skipped: [id 2] <not-an-email>: not a valid email address",
        "skipped: [id 3] <nopass@example.com>: no password",
        f"skipped: [id 4] <old@example.com>: {unverifiable}",
        f"skipped: [id 5] <md5@example.com>: {unverifiable}",
        "imported: twin <twin@example.com> [id 6]",
        "skipped: [id 7] <twin2@example.com>: username TWIN already taken",
        "skipped: [id 8] <TWIN@example.com>: same email as [id 6] above",
        "imported: Jo_Doe <jo@example.com> [id 9]",
    ]
    assert "username 'Jo Doe' is not valid here: imported as Jo_Doe" in report.lines[-1]
    assert set(stored_users(tmp_path)) == {"twin", "Jo_Doe"}


async def test_other_columns_and_odd_values_do_not_break_the_import(tmp_path: Path) -> None:
    schema = (
        "CREATE TABLE user (email VARCHAR(120), password VARCHAR(80), "
        "date_created DATETIME, avatar BLOB)"
    )
    rows: list[dict[str, object]] = [
        {"email": "ok@example.com", "password": "a fine password", "date_created": "yesterday"},
        {"email": "two\nlines@example.com", "password": "a fine password", "avatar": b"\x00"},
    ]

    report = await run_in_process(tmp_path, schema, rows)

    assert report.lines == [
        "imported: ok_user <ok@example.com> [row 1]; username derived from the email as ok_user; "
        "plaintext password (hashed with argon2id, never stored)",
        "skipped: [row 2] <'two\\nlines@example.com'>: not a valid email address",
    ]


@pytest.mark.parametrize(
    ("source", "username"),
    [
        ("alice", "alice"),
        ("john.doe+tag", "john.doe_tag"),
        ("j\u00f6rg", "jorg"),
        ("al", "al_user"),
        ("\u00e5", "a_user"),
        ("\u4f60\u597d", "user"),
        ("..x..", "x_user"),
        ("a" * 40, "a" * 32),
    ],
)
def test_derive_username_makes_a_valid_username(source: str, username: str) -> None:
    assert derive_username(source) == username


def test_with_suffix_keeps_32_characters() -> None:
    assert with_suffix("alice", 2) == "alice2"
    assert with_suffix("a" * 32, 12) == "a" * 30 + "12"


def test_classify_password(hasher: PasswordHasher) -> None:
    werkzeug_hash = generate_password_hash("x", "pbkdf2:sha256:1000")
    bcrypt_hash = bcrypt_text("x")

    assert classify_password(werkzeug_hash, hasher) == (werkzeug_hash, None, ())
    assert classify_password(bcrypt_hash.encode(), hasher) == (bcrypt_hash, None, ())
    assert classify_password(f"b'{bcrypt_hash}'", hasher) == (bcrypt_hash, None, ())
    assert classify_password("plain but long enough", hasher) == (
        None,
        "plain but long enough",
        ("plaintext password (hashed with argon2id, never stored)",),
    )
    assert classify_password(None, hasher) == "no password"
    assert classify_password("$6$rounds=5000$saltsalt$" + "a" * 86, hasher) == (
        "password is a hash in a format the service cannot verify: the user must reset it"
    )
    # A password that merely contains dollar signs is plaintext.
    classified = classify_password("$money$12", hasher)
    assert not isinstance(classified, str)
    assert classified[:2] == (None, "$money$12")
