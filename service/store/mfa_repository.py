"""Queries of the second factor: server-side challenges (``mfa_token``, WebAuthn challenges),
the methods a user has, TOTP factors and recovery codes. Queries only: the unit of work
commits. Passkeys have their own repository (``passkey_repository.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import AuthChallenge, Passkey, RecoveryCode, TotpFactor
from service.store.repository import rowcount


@dataclass(frozen=True)
class SecondFactors:
    """What a user can complete a login with; ``any`` decides whether a login needs a step."""

    totp: bool
    passkeys: int
    recovery_codes_left: int

    @property
    def any(self) -> bool:
        return self.totp or self.passkeys > 0

    @property
    def methods(self) -> list[str]:
        """The contract's ``methods`` of an MFA_REQUIRED answer, in a stable order."""
        methods = []
        if self.totp:
            methods.append("totp")
        if self.recovery_codes_left > 0:
            methods.append("recovery_code")
        if self.passkeys > 0:
            methods.append("passkey")
        return methods


class ChallengeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, challenge: AuthChallenge) -> AuthChallenge:
        self.session.add(challenge)
        await self.session.flush()
        return challenge

    async def live(self, handle: str, *, kind: str, now: datetime) -> AuthChallenge | None:
        """The unspent, unexpired challenge ``handle`` of this kind (reading does not spend)."""
        return await self.session.scalar(
            select(AuthChallenge).where(
                AuthChallenge.handle == handle,
                AuthChallenge.kind == kind,
                AuthChallenge.used_at.is_(None),
                AuthChallenge.expires_at > now,
            )
        )

    async def spend(self, handle: str, *, kind: str, now: datetime) -> bool:
        """Spend the challenge if it is live; of concurrent spends exactly one gets True."""
        result = await self.session.execute(
            update(AuthChallenge)
            .where(
                AuthChallenge.handle == handle,
                AuthChallenge.kind == kind,
                AuthChallenge.used_at.is_(None),
                AuthChallenge.expires_at > now,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return rowcount(result) == 1

    async def spend_all_for_user(self, user_pk: int, *, now: datetime) -> None:
        """Every live challenge of the user dies (its second factor was reset or changed)."""
        await self.session.execute(
            update(AuthChallenge)
            .where(AuthChallenge.user_pk == user_pk, AuthChallenge.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )

    async def prune(self, now: datetime) -> None:
        await self.session.execute(delete(AuthChallenge).where(AuthChallenge.expires_at <= now))


class SecondFactorRepository:
    """TOTP factors and recovery codes (``service/accounts/mfa.py`` owns their rules)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def factors_for(self, user_pk: int) -> SecondFactors:
        """One query: confirmed TOTP, passkey count, unused recovery codes."""
        totp = (
            select(func.count())
            .select_from(TotpFactor)
            .where(TotpFactor.user_pk == user_pk, TotpFactor.confirmed_at.is_not(None))
            .scalar_subquery()
        )
        passkeys = (
            select(func.count())
            .select_from(Passkey)
            .where(Passkey.user_pk == user_pk)
            .scalar_subquery()
        )
        codes = (
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_pk == user_pk, RecoveryCode.used_at.is_(None))
            .scalar_subquery()
        )
        row = (await self.session.execute(select(totp, passkeys, codes))).one()
        return SecondFactors(
            totp=bool(row[0]), passkeys=int(row[1]), recovery_codes_left=int(row[2])
        )
