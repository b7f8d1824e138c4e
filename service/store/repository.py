"""Queries only: repositories take a session and never commit (the unit of work does)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import Client, RefreshFamily, RevokedToken, User


class DuplicateUser(Exception):
    def __init__(self, field: str | None) -> None:
        super().__init__(field)
        self.field = field


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        *,
        username: str,
        email: str,
        password_hash: str,
        name: str | None = None,
        roles: Sequence[str] = (),
    ) -> User:
        """Insert a user; a taken username or email (in any letter case) raises DuplicateUser."""
        user = User(
            username=username,
            email=email.lower(),
            name=name,
            password_hash=password_hash,
            roles=sorted(set(roles)),
            is_active=True,
        )
        try:
            # Added inside the savepoint, so a duplicate rolls back only this insert and the
            # session stays usable.
            async with self.session.begin_nested():
                self.session.add(user)
                await self.session.flush()
        except IntegrityError as exc:
            raise DuplicateUser(_duplicate_field(exc)) from exc
        return user

    async def save(self) -> None:
        """Flush pending changes; a username or email taken meanwhile raises DuplicateUser."""
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError as exc:
            raise DuplicateUser(_duplicate_field(exc)) from exc

    async def by_id(self, user_id: uuid.UUID) -> User | None:
        result = await self.session.execute(select(User).where(User.id == user_id))
        return result.scalar_one_or_none()

    async def page(self, *, limit: int, after: uuid.UUID | None) -> Sequence[User]:
        """Users in creation order; ``after`` is the last id of the previous page."""
        query = select(User).order_by(User.pk).limit(limit)
        if after is not None:
            query = query.where(User.pk > select(User.pk).where(User.id == after).scalar_subquery())
        result = await self.session.execute(query)
        return result.scalars().all()

    async def taken_field(self, *, username: str, email: str) -> str | None:
        """``"username"`` or ``"email"`` when a user already has it (in any letter case)."""
        name_taken = func.lower(User.username) == username.lower()
        result = await self.session.execute(
            select(name_taken)
            .where(or_(name_taken, func.lower(User.email) == email.lower()))
            .order_by(name_taken.desc())
            .limit(1)
        )
        row = result.one_or_none()
        if row is None:
            return None
        return "username" if row[0] else "email"

    async def by_login(self, login: str) -> User | None:
        """A user by username or email, compared case-insensitively."""
        lowered = login.lower()
        column = func.lower(User.email) if "@" in login else func.lower(User.username)
        result = await self.session.execute(select(User).where(column == lowered))
        return result.scalar_one_or_none()


def _duplicate_field(error: IntegrityError) -> str | None:
    message = str(error.orig).lower()
    for field in ("username", "email"):
        if f"uq_users_{field}_lower" in message:
            return field
    return None


class FamilyRepository:
    """Refresh token families (login sessions). Rotation is one conditional UPDATE."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, family: RefreshFamily) -> RefreshFamily:
        self.session.add(family)
        await self.session.flush()
        return family

    async def by_id(self, family_id: uuid.UUID) -> RefreshFamily | None:
        result = await self.session.execute(
            select(RefreshFamily).where(RefreshFamily.id == family_id)
        )
        return result.scalar_one_or_none()

    async def rotate(
        self,
        family_id: uuid.UUID,
        *,
        presented_jti: str,
        new_jti: str,
        issued_at: int,
        now: datetime,
    ) -> bool:
        """Spend ``presented_jti`` if it is the family's live token; False if someone else did.

        Of concurrent rotations with the same token exactly one matches the WHERE clause.
        """
        result = await self.session.execute(
            update(RefreshFamily)
            .where(
                RefreshFamily.id == family_id,
                RefreshFamily.current_jti == presented_jti,
                RefreshFamily.revoked_at.is_(None),
                RefreshFamily.expires_at > now,
            )
            .values(
                previous_jti=presented_jti,
                current_jti=new_jti,
                current_issued_at=issued_at,
                rotated_at=now,
                last_used_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        return _rowcount(result) == 1

    async def revoke(self, family_id: uuid.UUID, *, reason: str, now: datetime) -> None:
        await self.session.execute(
            update(RefreshFamily)
            .where(RefreshFamily.id == family_id, RefreshFamily.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .execution_options(synchronize_session=False)
        )

    async def revoke_all(
        self, user_pk: int, *, reason: str, now: datetime, keep: uuid.UUID | None = None
    ) -> Sequence[uuid.UUID]:
        """Revoke the user's live sessions (but ``keep``); the ids of those it revoked."""
        conditions = [RefreshFamily.user_pk == user_pk, RefreshFamily.revoked_at.is_(None)]
        if keep is not None:
            conditions.append(RefreshFamily.id != keep)
        result = await self.session.execute(
            update(RefreshFamily)
            .where(*conditions)
            .values(revoked_at=now, revoked_reason=reason)
            .returning(RefreshFamily.id)
            .execution_options(synchronize_session=False)
        )
        return result.scalars().all()

    async def active_for_user(self, user_pk: int, now: datetime) -> Sequence[RefreshFamily]:
        result = await self.session.execute(
            select(RefreshFamily)
            .where(
                RefreshFamily.user_pk == user_pk,
                RefreshFamily.revoked_at.is_(None),
                RefreshFamily.expires_at > now,
            )
            .order_by(RefreshFamily.last_used_at.desc(), RefreshFamily.pk.desc())
        )
        return result.scalars().all()

    async def prune(self, now: datetime) -> None:
        """Forget families past their absolute lifetime: no token of theirs can be valid."""
        await self.session.execute(delete(RefreshFamily).where(RefreshFamily.expires_at < now))


class RevocationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def revoke_jti(self, jti: str, expires_at: datetime) -> None:
        existing = await self.session.get(RevokedToken, jti)
        if existing is None:
            self.session.add(RevokedToken(jti=jti, expires_at=expires_at))
            await self.session.flush()

    async def prune(self, now: datetime) -> None:
        await self.session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))


class DuplicateClient(Exception):
    """A client with this name (in any letter case) or this client_id exists."""


class ClientRepository:
    """Machine clients, found by their public ``client_id`` or their operator-given name."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self, *, client_id: str, name: str, secret_hash: str, scopes: Sequence[str]
    ) -> Client:
        client = Client(
            client_id=client_id, name=name, secret_hash=secret_hash, scopes=sorted(set(scopes))
        )
        try:
            async with self.session.begin_nested():
                self.session.add(client)
                await self.session.flush()
        except IntegrityError as exc:
            raise DuplicateClient(name) from exc
        return client

    async def by_client_id(self, client_id: str) -> Client | None:
        result = await self.session.execute(select(Client).where(Client.client_id == client_id))
        return result.scalar_one_or_none()

    async def by_name(self, name: str) -> Client | None:
        result = await self.session.execute(
            select(Client).where(func.lower(Client.name) == name.lower())
        )
        return result.scalar_one_or_none()

    async def all(self) -> Sequence[Client]:
        result = await self.session.execute(select(Client).order_by(Client.pk))
        return result.scalars().all()

    async def delete(self, client: Client) -> None:
        await self.session.delete(client)
        await self.session.flush()


@dataclass(frozen=True)
class ClientSubject:
    """What a request's client token is checked against, read in one query."""

    client: Client | None
    jti_revoked: bool


async def load_client_subject(session: AsyncSession, *, client_id: str, jti: str) -> ClientSubject:
    jti_revoked = exists().where(RevokedToken.jti == jti)
    result = await session.execute(select(Client, jti_revoked).where(Client.client_id == client_id))
    row = result.one_or_none()
    if row is None:
        return ClientSubject(client=None, jti_revoked=False)
    return ClientSubject(client=row[0], jti_revoked=bool(row[1]))


@dataclass(frozen=True)
class TokenSubject:
    """What a request's access token is checked against, read in one query."""

    user: User | None
    family_revoked: bool
    jti_revoked: bool


async def load_token_subject(
    session: AsyncSession, *, user_id: uuid.UUID, family_id: uuid.UUID | None, jti: str
) -> TokenSubject:
    # A token naming a session must name a live session of its own user.
    family_revoked = (
        ~exists().where(
            RefreshFamily.id == family_id,
            RefreshFamily.user_pk == User.pk,
            RefreshFamily.revoked_at.is_(None),
        )
        if family_id is not None
        else literal(False)
    )
    jti_revoked = exists().where(RevokedToken.jti == jti)
    result = await session.execute(
        select(User, family_revoked, jti_revoked).where(User.id == user_id)
    )
    row = result.one_or_none()
    if row is None:
        return TokenSubject(user=None, family_revoked=False, jti_revoked=False)
    return TokenSubject(user=row[0], family_revoked=bool(row[1]), jti_revoked=bool(row[2]))


def _rowcount(result: Any) -> int:
    count: int = result.rowcount
    return count
