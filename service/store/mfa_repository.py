"""Queries of the second factor: server-side challenges (``mfa_token``, WebAuthn challenges),
the methods a user has, TOTP factors and recovery codes. Queries only: the unit of work
commits. Passkeys have their own repository (``passkey_repository.py``)."""

from __future__ import annotations

from collections.abc import Sequence
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

    async def totp_for(self, user_pk: int) -> TotpFactor | None:
        return await self.session.get(TotpFactor, user_pk, populate_existing=True)

    async def put_pending_totp(self, user_pk: int, sealed_secret: str, now: datetime) -> bool:
        """Store a new unconfirmed factor, replacing an unconfirmed one; False (and nothing
        changed) when a confirmed factor is there."""
        factor = await self.totp_for(user_pk)
        if factor is not None and factor.confirmed_at is not None:
            return False
        if factor is None:
            self.session.add(
                TotpFactor(user_pk=user_pk, secret=sealed_secret, created_at=now, last_step=0)
            )
        else:
            factor.secret, factor.created_at, factor.last_step = sealed_secret, now, 0
        await self.session.flush()
        return True

    async def accept_step(
        self, user_pk: int, step: int, *, confirming: bool, now: datetime
    ) -> bool:
        """Accept a code of time step ``step``: only a step later than the last accepted one,
        by one conditional UPDATE (of concurrent requests with one code, exactly one wins).
        ``confirming``: the factor must be unconfirmed and becomes confirmed; else it must be
        confirmed already."""
        confirmed = (
            TotpFactor.confirmed_at.is_(None)
            if confirming
            else TotpFactor.confirmed_at.is_not(None)
        )
        values: dict[str, object] = {"last_step": step}
        if confirming:
            values["confirmed_at"] = now
        result = await self.session.execute(
            update(TotpFactor)
            .where(TotpFactor.user_pk == user_pk, TotpFactor.last_step < step, confirmed)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return rowcount(result) == 1

    async def delete_totp(self, user_pk: int) -> None:
        await self.session.execute(delete(TotpFactor).where(TotpFactor.user_pk == user_pk))

    async def replace_recovery_codes(
        self, user_pk: int, code_hashes: Sequence[str], now: datetime
    ) -> None:
        """A new set; the old one (used or not) is gone."""
        await self.delete_recovery_codes(user_pk)
        self.session.add_all(
            RecoveryCode(user_pk=user_pk, code_hash=code_hash, created_at=now)
            for code_hash in code_hashes
        )
        await self.session.flush()

    async def use_recovery_code(self, user_pk: int, code_hash: str, now: datetime) -> bool:
        """Spend an unused code of the user; of concurrent uses of one code exactly one wins."""
        result = await self.session.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_pk == user_pk,
                RecoveryCode.code_hash == code_hash,
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return rowcount(result) == 1

    async def delete_recovery_codes(self, user_pk: int) -> None:
        await self.session.execute(delete(RecoveryCode).where(RecoveryCode.user_pk == user_pk))

    async def delete_all(self, user_pk: int) -> None:
        """Every second factor of the user: TOTP, recovery codes, passkeys."""
        await self.delete_totp(user_pk)
        await self.delete_recovery_codes(user_pk)
        await self.session.execute(delete(Passkey).where(Passkey.user_pk == user_pk))
