"""The unit of work: one transaction whose repositories share its session.

Nothing is kept unless ``commit`` runs; leaving the block rolls back whatever was not committed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.core.config import Settings
from service.store.db import Database
from service.store.mfa_repository import ChallengeRepository, SecondFactorRepository
from service.store.passkey_repository import PasskeyRepository
from service.store.repository import (
    ClientRepository,
    FamilyRepository,
    OutboxRepository,
    RevocationRepository,
    UserRepository,
)


class UnitOfWork:
    def __init__(self, database: Database, *, write: bool) -> None:
        self._database = database
        self._write = write

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[UnitOfWork]:
        async with self._database.session(write=self._write) as session:
            self.session = session
            self.users = UserRepository(session)
            self.families = FamilyRepository(session)
            self.revocations = RevocationRepository(session)
            self.clients = ClientRepository(session)
            self.outbox = OutboxRepository(session)
            self.challenges = ChallengeRepository(session)
            self.second_factors = SecondFactorRepository(session)
            self.passkeys = PasskeyRepository(session)
            yield self

    @property
    def settings(self) -> Settings:
        return self._database.settings

    async def commit(self) -> None:
        await self.session.commit()


@asynccontextmanager
async def unit_of_work(database: Database, *, write: bool = False) -> AsyncIterator[UnitOfWork]:
    async with UnitOfWork(database, write=write).begin() as uow:
        yield uow
