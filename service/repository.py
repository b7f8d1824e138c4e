"""Queries only: repositories take a session and never commit (the unit of work does)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .models import User


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

    async def by_id(self, user_id: uuid.UUID) -> User | None:
        result = await self.session.execute(select(User).where(User.id == user_id))
        return result.scalar_one_or_none()

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
