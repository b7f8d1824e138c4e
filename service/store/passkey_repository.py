"""Queries of passkeys (WebAuthn credentials). Queries only: the unit of work commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import Passkey


class PasskeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_for(self, user_pk: int) -> Sequence[Passkey]:
        """The user's passkeys, oldest first."""
        result = await self.session.scalars(
            select(Passkey).where(Passkey.user_pk == user_pk).order_by(Passkey.pk)
        )
        return result.all()
