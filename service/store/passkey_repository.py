"""Queries of passkeys (WebAuthn credentials). Queries only: the unit of work commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import Passkey, User
from service.store.repository import rowcount


class DuplicateCredential(Exception):
    """This credential id is registered already (by this user or another)."""


class PasskeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_for(self, user_pk: int) -> Sequence[Passkey]:
        """The user's passkeys, oldest first."""
        result = await self.session.scalars(
            select(Passkey).where(Passkey.user_pk == user_pk).order_by(Passkey.pk)
        )
        return result.all()

    async def count_for(self, user_pk: int) -> int:
        count = await self.session.scalar(
            select(func.count()).select_from(Passkey).where(Passkey.user_pk == user_pk)
        )
        return int(count or 0)

    async def by_id_for(self, user_pk: int, passkey_id: uuid.UUID) -> Passkey | None:
        """The user's passkey ``passkey_id``; None for another user's (not found, not told)."""
        return await self.session.scalar(
            select(Passkey).where(Passkey.id == passkey_id, Passkey.user_pk == user_pk)
        )

    async def with_owner(self, credential_id: bytes) -> tuple[Passkey, User] | None:
        """The passkey of this credential id and its user, in one query."""
        row = (
            await self.session.execute(
                select(Passkey, User)
                .join(User, User.pk == Passkey.user_pk)
                .where(Passkey.credential_id == credential_id)
            )
        ).one_or_none()
        return None if row is None else (row[0], row[1])

    async def add(self, passkey: Passkey) -> Passkey:
        """Insert; DuplicateCredential when the credential id is taken (the unique index
        decides between concurrent registrations of one credential)."""
        taken = await self.session.scalar(
            select(Passkey.pk).where(Passkey.credential_id == passkey.credential_id)
        )
        if taken is not None:
            raise DuplicateCredential()
        self.session.add(passkey)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise DuplicateCredential() from exc
        return passkey

    async def delete_for(self, user_pk: int, passkey_id: uuid.UUID) -> bool:
        result = await self.session.execute(
            delete(Passkey)
            .where(Passkey.id == passkey_id, Passkey.user_pk == user_pk)
            .execution_options(synchronize_session=False)
        )
        return rowcount(result) == 1

    async def record_use(
        self,
        passkey_pk: int,
        *,
        expected_sign_count: int,
        new_sign_count: int,
        backed_up: bool,
        now: datetime,
    ) -> bool:
        """Store a verified assertion's counter, if the stored one is still the one it was
        checked against: of two concurrent assertions checked against one counter value,
        exactly one gets True (the other is a replay or a cloned authenticator)."""
        result = await self.session.execute(
            update(Passkey)
            .where(Passkey.pk == passkey_pk, Passkey.sign_count == expected_sign_count)
            .values(sign_count=new_sign_count, backed_up=backed_up, last_used_at=now)
            .execution_options(synchronize_session=False)
        )
        return rowcount(result) == 1
