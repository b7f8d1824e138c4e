"""Use cases: register, authenticate, issue tokens, resolve a token's user. They own the commits.

Nothing here knows HTTP: callers pass plain values and get models, tokens or APIError exceptions.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .db import Database
from .errors import AccountDisabled, InvalidCredentials, NotFound, TokenInvalid, UserExists
from .models import User
from .passwords import PasswordHasher
from .repository import DuplicateUser, UserRepository
from .tokens import Claims, TokenSettings, encode_token


class UnitOfWork:
    """One transaction: repositories share its session; nothing is kept unless ``commit`` runs."""

    def __init__(self, database: Database, *, write: bool) -> None:
        self._database = database
        self._write = write

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[UnitOfWork]:
        async with self._database.session(write=self._write) as session:
            self.session = session
            self.users = UserRepository(session)
            yield self

    async def commit(self) -> None:
        await self.session.commit()


@asynccontextmanager
async def unit_of_work(database: Database, *, write: bool = False) -> AsyncIterator[UnitOfWork]:
    async with UnitOfWork(database, write=write).begin() as uow:
        yield uow


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    user_id: uuid.UUID
    token_type: str = "Bearer"


async def register(
    database: Database,
    hasher: PasswordHasher,
    *,
    username: str,
    email: str,
    password: str,
    name: str | None = None,
    roles: Sequence[str] = (),
) -> User:
    password_hash = await hasher.hash(password)
    async with unit_of_work(database, write=True) as uow:
        try:
            user = await uow.users.add(
                username=username, email=email, password_hash=password_hash, name=name, roles=roles
            )
        except DuplicateUser as exc:
            detail = {
                "username": "This username is taken.",
                "email": "This email is already registered.",
            }.get(exc.field or "")
            raise UserExists(detail) from exc
        await uow.commit()
        return user


async def authenticate(
    database: Database, hasher: PasswordHasher, *, login: str, password: str
) -> User:
    """The user for these credentials, or InvalidCredentials.

    Unknown users and disabled accounts cost a hash verification too, and every failure gives the
    same error, so neither the answer nor its timing tells whether an account exists.
    """
    async with unit_of_work(database) as uow:
        user = await uow.users.by_login(login)
    usable = user is not None and user.is_active
    verification = await hasher.verify(password, user.password_hash if usable and user else None)
    if user is None or not usable or not verification.ok:
        raise InvalidCredentials()
    if verification.new_hash is not None:
        await _store_upgraded_hash(database, user.id, verification.new_hash)
    return user


async def _store_upgraded_hash(database: Database, user_id: uuid.UUID, new_hash: str) -> None:
    async with unit_of_work(database, write=True) as uow:
        user = await uow.users.by_id(user_id)
        if user is not None:
            user.password_hash = new_hash
            await uow.commit()


def issue_token_pair(settings: TokenSettings, user: User, *, fresh: bool) -> TokenPair:
    subject = str(user.id)
    access = encode_token(
        settings, subject=subject, token_type="access", fresh=fresh, roles=user.roles
    )
    refresh = encode_token(settings, subject=subject, token_type="refresh")
    return TokenPair(
        access_token=access.token,
        refresh_token=refresh.token,
        expires_in=settings.access_ttl,
        refresh_expires_in=settings.refresh_ttl,
        user_id=user.id,
    )


async def user_for_claims(database: Database, claims: Claims) -> User:
    """The live user a verified token speaks for; deleted or disabled users are refused."""
    try:
        user_id = uuid.UUID(claims.subject)
    except ValueError as exc:
        raise TokenInvalid() from exc
    async with unit_of_work(database) as uow:
        user = await uow.users.by_id(user_id)
    if user is None:
        raise TokenInvalid("The token's user does not exist.")
    if not user.is_active:
        raise AccountDisabled()
    return user


async def get_user(database: Database, user_id: uuid.UUID) -> User:
    async with unit_of_work(database) as uow:
        user = await uow.users.by_id(user_id)
    if user is None:
        raise NotFound()
    return user


async def set_roles(database: Database, login: str, roles: Sequence[str]) -> User:
    async with unit_of_work(database, write=True) as uow:
        user = await _user_by_login(uow, login)
        user.roles = sorted(set(roles))
        await uow.commit()
        return user


async def set_active(database: Database, login: str, *, active: bool) -> User:
    async with unit_of_work(database, write=True) as uow:
        user = await _user_by_login(uow, login)
        user.is_active = active
        await uow.commit()
        return user


async def _user_by_login(uow: UnitOfWork, login: str) -> User:
    user = await uow.users.by_login(login)
    if user is None:
        raise NotFound(f"No user {login!r}.")
    return user
