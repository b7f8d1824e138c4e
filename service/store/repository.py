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

from service.store.models import Client, OutboxMessage, RefreshFamily, RevokedToken, User


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

    async def by_pk(self, pk: int) -> User | None:
        return await self.session.scalar(select(User).where(User.pk == pk))

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
        return rowcount(result) == 1

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


class OutboxRepository:
    """The mail outbox. A sender claims one message at a time with a lease: a conditional UPDATE
    that matches only while nobody holds it, so of two senders exactly one gets it; every later
    change names the claim token, so a sender whose lease ran out changes nothing."""

    # How many due messages a claim looks at when others are being claimed at the same moment.
    CANDIDATES = 8

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *, recipient: str, subject: str, message: str, now: datetime) -> None:
        self.session.add(
            OutboxMessage(
                recipient=recipient,
                subject=subject,
                message=message,
                created_at=now,
                next_attempt_at=now,
                attempts=0,
            )
        )
        await self.session.flush()

    async def claim_due(
        self, *, now: datetime, lease_until: datetime, claim: str
    ) -> OutboxMessage | None:
        """Take the next due message nobody holds until ``lease_until``; None when none is due."""
        free = or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now)
        due = (OutboxMessage.next_attempt_at.is_not(None), OutboxMessage.next_attempt_at <= now)
        candidates = await self.session.execute(
            select(OutboxMessage.id)
            .where(*due, free)
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(self.CANDIDATES)
            # PostgreSQL: skip rows another sender is claiming right now (SQLite: no-op, its
            # writers are serialised anyway).
            .with_for_update(skip_locked=True)
        )
        for message_id in candidates.scalars().all():
            # The guard is repeated: on PostgreSQL a concurrent claim that committed first makes
            # this UPDATE match nothing once it re-reads the row.
            result = await self.session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id, *due, free)
                .values(
                    claimed_until=lease_until,
                    claim=claim,
                    attempts=OutboxMessage.attempts + 1,
                )
                .execution_options(synchronize_session=False)
            )
            if rowcount(result) == 1:
                claimed = await self.session.execute(
                    select(OutboxMessage)
                    .where(OutboxMessage.id == message_id)
                    .execution_options(populate_existing=True)
                )
                return claimed.scalar_one()
        return None

    async def any_due(self, now: datetime) -> bool:
        """Whether a message is due that nobody holds: asked in a read transaction first, so an
        idle poll never takes SQLite's write lock."""
        result = await self.session.execute(
            select(
                exists().where(
                    OutboxMessage.next_attempt_at.is_not(None),
                    OutboxMessage.next_attempt_at <= now,
                    or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
                )
            )
        )
        return bool(result.scalar())

    async def mark_sent(self, message_id: int, *, claim: str, now: datetime) -> bool:
        """Done: the body (which may hold a live link) is dropped. False if the claim was lost."""
        return await self._settle(
            message_id, claim, sent_at=now, next_attempt_at=None, message="", last_error=None
        )

    async def mark_failed(self, message_id: int, *, claim: str, now: datetime, error: str) -> bool:
        """Given up for good (a permanent refusal): kept with its error, never tried again."""
        return await self._settle(
            message_id, claim, failed_at=now, next_attempt_at=None, message="", last_error=error
        )

    async def retry_at(self, message_id: int, *, claim: str, when: datetime, error: str) -> bool:
        return await self._settle(message_id, claim, next_attempt_at=when, last_error=error)

    async def _settle(self, message_id: int, claim: str, **values: Any) -> bool:
        result = await self.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id, OutboxMessage.claim == claim)
            .values(claimed_until=None, claim=None, **values)
            .execution_options(synchronize_session=False)
        )
        return rowcount(result) == 1

    async def next_attempt(self) -> datetime | None:
        """When the earliest pending message is due (it may be held by a sender meanwhile)."""
        result = await self.session.execute(
            select(
                func.min(func.coalesce(OutboxMessage.claimed_until, OutboxMessage.next_attempt_at))
            ).where(OutboxMessage.next_attempt_at.is_not(None))
        )
        return result.scalar_one_or_none()

    async def prune(self, before: datetime) -> None:
        """Forget messages done (sent or given up) before ``before``."""
        await self.session.execute(
            delete(OutboxMessage).where(
                OutboxMessage.next_attempt_at.is_(None),
                or_(OutboxMessage.sent_at < before, OutboxMessage.failed_at < before),
            )
        )


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


def rowcount(result: Any) -> int:
    count: int = result.rowcount
    return count
