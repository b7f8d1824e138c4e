"""``python -m service``: migrations and user administration, with the server's AUTH_* env."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable, Sequence

from pydantic import ValidationError

from . import auth, migrations
from .config import ConfigError, load_settings
from .errors import APIError
from .http import validation_errors
from .schemas import SignupRequest, UserOut
from .state import AuthState

Command = Callable[[AuthState, argparse.Namespace], Awaitable[str]]


async def _db_upgrade(state: AuthState, args: argparse.Namespace) -> str:
    await migrations.upgrade(state.database, args.revision)
    return f"database at {args.revision}"


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise ConfigError("the passwords differ")
    return first


async def _users_create(state: AuthState, args: argparse.Namespace) -> str:
    password = _read_password(args)
    try:
        data = SignupRequest.model_validate(
            {
                "username": args.username,
                "email": args.email,
                "password": password,
                "name": args.name,
            }
        )
    except ValidationError as exc:
        issues = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in validation_errors(exc))
        raise ConfigError(issues) from None
    user = await auth.register(
        state.database,
        state.hasher,
        username=data.username,
        email=data.email,
        password=data.password,
        name=data.name,
        roles=args.role,
    )
    return UserOut.model_validate(user).model_dump_json()


async def _users_set_roles(state: AuthState, args: argparse.Namespace) -> str:
    user = await auth.set_roles(state.database, args.username, args.roles)
    return UserOut.model_validate(user).model_dump_json()


async def _users_disable(state: AuthState, args: argparse.Namespace) -> str:
    user = await auth.set_active(state.database, args.username, active=False)
    return UserOut.model_validate(user).model_dump_json()


async def _users_enable(state: AuthState, args: argparse.Namespace) -> str:
    user = await auth.set_active(state.database, args.username, active=True)
    return UserOut.model_validate(user).model_dump_json()


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
    create.set_defaults(run=_users_create)
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
    return parser


async def _run(command: Command, args: argparse.Namespace) -> str:
    state = AuthState.build(load_settings())
    try:
        if args.group != "db" and state.settings.is_sqlite and state.settings.auto_migrate:
            await migrations.upgrade(state.database)
        return await command(state, args)
    finally:
        await state.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(asyncio.run(_run(args.run, args)))
    except (ConfigError, APIError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
