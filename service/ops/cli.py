"""``python -m service``: migrations, user and machine-client administration, with the
server's AUTH_* env."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import itertools
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from service.accounts import Accounts
from service.core.config import ConfigError, load_settings
from service.core.errors import APIError
from service.core.keys import GENERATED_ALGORITHMS, generate_private_key_pem, key_from_pem
from service.ops import importer
from service.store import migrations
from service.store.db import UNAVAILABLE_ERRORS
from service.web.http import validation_errors
from service.web.oauth_schemas import ClientOut
from service.web.schemas import SignupRequest, UserOut


class UsageError(Exception):
    """What the operator typed cannot be used (a password prompt left, a file in the way); one
    line on stderr, exit 1. Settings that cannot be used are ConfigError."""


Command = Callable[[Accounts, argparse.Namespace], Awaitable[str]]
# Commands that need neither the settings nor the database (they run even when both are broken).
LocalCommand = Callable[[argparse.Namespace], str]
# What a command asks the operator, before the settings are read and the database is opened.
Prepare = Callable[[argparse.Namespace], None]


async def _db_upgrade(accounts: Accounts, args: argparse.Namespace) -> str:
    await migrations.upgrade(accounts.database, args.revision)
    return f"database at {args.revision}"


def _read_password(args: argparse.Namespace) -> None:
    """Put the new user's password in ``args.password``.

    A ``prepare`` step: it runs before the event loop starts, where Ctrl-C at the prompt would
    only take effect after Enter.
    """
    if args.password_stdin:
        args.password = sys.stdin.readline().rstrip("\r\n")
        return
    # Without a terminal getpass would warn, echo the password, or fail on an empty input.
    if not sys.stdin.isatty():
        raise UsageError("no terminal to read the password from; use --password-stdin")
    try:
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat password: "):
            raise UsageError("the passwords differ")
    except EOFError:  # Ctrl-D at the prompt
        raise UsageError("no password given") from None
    args.password = first


async def _users_create(accounts: Accounts, args: argparse.Namespace) -> str:
    try:
        data = SignupRequest.model_validate(
            {
                "username": args.username,
                "email": args.email,
                "password": args.password,
                "name": args.name,
            }
        )
    except ValidationError as exc:
        issues = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in validation_errors(exc))
        raise UsageError(issues) from None
    user = await accounts.register(
        username=data.username,
        email=data.email,
        password=data.password,
        name=data.name,
        roles=args.role,
    )
    return UserOut.model_validate(user).model_dump_json()


async def _users_set_roles(accounts: Accounts, args: argparse.Namespace) -> str:
    user = await accounts.set_roles(args.username, args.roles)
    return UserOut.model_validate(user).model_dump_json()


async def _users_disable(accounts: Accounts, args: argparse.Namespace) -> str:
    user = await accounts.set_active(args.username, active=False)
    return UserOut.model_validate(user).model_dump_json()


async def _users_enable(accounts: Accounts, args: argparse.Namespace) -> str:
    user = await accounts.set_active(args.username, active=True)
    return UserOut.model_validate(user).model_dump_json()


async def _users_reset_mfa(accounts: Accounts, args: argparse.Namespace) -> str:
    user = await accounts.mfa.reset(args.username)
    return UserOut.model_validate(user).model_dump_json()


async def _users_import(accounts: Accounts, args: argparse.Namespace) -> str:
    report = await importer.import_users(
        accounts.database, accounts.hasher, args.url, dry_run=args.dry_run, table=args.table
    )
    return report.render()


async def _clients_create(accounts: Accounts, args: argparse.Namespace) -> str:
    credentials = await accounts.clients.create(args.name, args.scope)
    return ClientOut.with_secret(credentials).model_dump_json(exclude_none=True)


async def _clients_list(accounts: Accounts, args: argparse.Namespace) -> str:
    clients = await accounts.clients.list_clients()
    return json.dumps([ClientOut.of(c).model_dump(mode="json", exclude_none=True) for c in clients])


async def _clients_rotate_secret(accounts: Accounts, args: argparse.Namespace) -> str:
    credentials = await accounts.clients.rotate_secret(args.name)
    return ClientOut.with_secret(credentials).model_dump_json(exclude_none=True)


async def _clients_delete(accounts: Accounts, args: argparse.Namespace) -> str:
    client = await accounts.clients.delete(args.name)
    return ClientOut.of(client).model_dump_json(exclude_none=True)


def write_private_file(path: Path, content: bytes, *, force: bool) -> None:
    """Write ``content`` readable by the owner only; an existing file is kept unless ``force``.

    The key is written to a staged file first, so ``path`` never holds half a key and is never
    readable by others, not even for a moment.
    """
    _make_private_directories(path.parent)
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # whatever the umask
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(staged, path)
        else:
            # link() creates the name only if it is absent: no check-then-write race.
            os.link(staged, path)
    except FileExistsError:
        raise UsageError(f"{path} exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()


def _make_private_directories(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each readable by the owner only (0700)."""
    try:
        ancestors = (directory, *directory.parents)
        missing = list(itertools.takewhile(lambda folder: not folder.is_dir(), ancestors))
        for folder in reversed(missing):
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                if folder.is_dir():  # made meanwhile by another process
                    continue
                raise UsageError(f"{folder} exists and is not a folder") from None
            os.chmod(folder, 0o700)  # whatever the umask
    except OSError as exc:
        failed = exc.filename or directory
        raise UsageError(f"cannot create {failed}: {exc.strerror or exc}") from None


def _keys_generate(args: argparse.Namespace) -> str:
    pem = generate_private_key_pem(args.algorithm)
    write_private_file(args.out, pem, force=args.force)
    return key_from_pem(args.algorithm, pem).kid


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    groups = parser.add_subparsers(dest="group", required=True)

    db = groups.add_parser("db", help="database schema").add_subparsers(
        dest="action", required=True
    )
    upgrade = db.add_parser("upgrade", help="apply the alembic migrations")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(run=_db_upgrade)

    users = groups.add_parser("users", help="user administration")
    actions = users.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a user")
    create.add_argument("username")
    create.add_argument("--email", required=True)
    create.add_argument("--name")
    create.add_argument("--role", action="append", default=[], help="repeat for several roles")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    create.set_defaults(run=_users_create, prepare=_read_password)
    roles = actions.add_parser("set-roles", help="replace a user's roles (none clears them)")
    roles.add_argument("username")
    roles.add_argument("roles", nargs="*")
    roles.set_defaults(run=_users_set_roles)
    disable = actions.add_parser("disable", help="disable a user: tokens and logins are refused")
    disable.add_argument("username")
    disable.set_defaults(run=_users_disable)
    enable = actions.add_parser("enable", help="enable a disabled user")
    enable.add_argument("username")
    enable.set_defaults(run=_users_enable)
    reset_mfa = actions.add_parser(
        "reset-mfa",
        help="remove a user's second factors (TOTP, recovery codes, passkeys) and end its sessions",
    )
    reset_mfa.add_argument("username")
    reset_mfa.set_defaults(run=_users_reset_mfa)
    user_import = actions.add_parser(
        "import",
        help="import users from a Flask app's database (user or users table)",
        description="Import users from a Flask app's database: a 'user' or 'users' table with "
        "username and/or email, optional name, and password (werkzeug or flask-bcrypt hash, or "
        "plaintext, which is hashed). Existing usernames and emails are reported, never "
        "overwritten; running it again imports nothing twice. Legacy hashes are upgraded to "
        "argon2id at each user's first login.",
    )
    user_import.add_argument(
        "url", metavar="SQLALCHEMY_URL", help="e.g. sqlite:///instance/db.sqlite"
    )
    user_import.add_argument("--dry-run", action="store_true", help="report only; write nothing")
    user_import.add_argument("--table", help="the source table (default: 'user' or 'users')")
    user_import.set_defaults(run=_users_import)

    clients = groups.add_parser("clients", help="machine clients (OAuth2 client credentials)")
    client_actions = clients.add_subparsers(dest="action", required=True)
    client_create = client_actions.add_parser(
        "create",
        help="create a client and print its client_id and client_secret (shown this once)",
        description="Create a machine client. Its client_secret is printed this once: only a "
        "hash of it is kept.",
    )
    client_create.add_argument("name", help="3 to 32 letters, digits, '_', '.' or '-'")
    client_create.add_argument(
        "--scope", action="append", default=[], help="repeat for several scopes"
    )
    client_create.set_defaults(run=_clients_create)
    client_list = client_actions.add_parser("list", help="the clients, as a JSON array")
    client_list.set_defaults(run=_clients_list)
    client_rotate = client_actions.add_parser(
        "rotate-secret",
        help="give a client a new secret and print it once; the old one stops working",
    )
    client_rotate.add_argument("name")
    client_rotate.set_defaults(run=_clients_rotate_secret)
    client_delete = client_actions.add_parser(
        "delete", help="delete a client: its tokens stop working at once"
    )
    client_delete.add_argument("name")
    client_delete.set_defaults(run=_clients_delete)

    keys = groups.add_parser("keys", help="signing keys (needs no database)")
    key_actions = keys.add_subparsers(dest="action", required=True)
    generate = key_actions.add_parser(
        "generate",
        help="write a new private key (PKCS8 PEM, mode 0600) and print its kid",
        description="Write a new private key for AUTH_JWT_PRIVATE_KEY_FILE and print its kid "
        "(RFC 7638 thumbprint). To rotate, name the old file in AUTH_JWT_PREVIOUS_KEY_FILES.",
    )
    generate.add_argument("--algorithm", required=True, choices=GENERATED_ALGORITHMS)
    generate.add_argument("--out", required=True, type=Path, metavar="FILE")
    generate.add_argument("--force", action="store_true", help="overwrite an existing FILE")
    generate.set_defaults(local=_keys_generate)
    return parser


async def _run(command: Command, args: argparse.Namespace) -> str:
    settings = load_settings()
    accounts = Accounts.from_settings(settings)
    try:
        if args.group != "db" and settings.is_sqlite and settings.auto_migrate:
            await migrations.upgrade(accounts.database)
        return await command(accounts, args)
    except UNAVAILABLE_ERRORS as exc:
        # An unreachable server, a missing database, a refused login: one line, not a traceback.
        url = make_url(settings.database_url).render_as_string(hide_password=True)
        raise ConfigError(f"the database at {url} cannot be used: {_one_line(exc)}") from exc
    finally:
        await accounts.close()


def _one_line(exc: BaseException) -> str:
    """What the driver said, on one line (SQLAlchemy's wrapper adds the statement and a link)."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = " ".join(str(cause).split())
    return text or cause.__class__.__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    local: LocalCommand | None = getattr(args, "local", None)
    prepare: Prepare | None = getattr(args, "prepare", None)
    try:
        if prepare is not None:
            prepare(args)
        print(local(args) if local is not None else asyncio.run(_run(args.run, args)))
    except (ConfigError, UsageError, APIError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
