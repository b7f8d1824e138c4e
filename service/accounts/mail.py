"""Mail: messages queued in the outbox in the transaction of the change that causes them, and
a background sender that delivers them (SMTP, or ``.eml`` files in development). Being built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from service.core.config import Settings
from service.store.db import Database
from service.store.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Mail:
    """One message to queue: ``template`` names files in ``service/accounts/mail_templates/``
    (``<template>.subject.txt``, ``<template>.txt``, ``<template>.html``), rendered with
    ``context``."""

    to: str
    template: str
    context: Mapping[str, str] = field(default_factory=dict)


async def queue_mail(uow: UnitOfWork, mail: Mail) -> None:
    """Add ``mail`` to the outbox in ``uow``'s transaction (sent once the caller commits)."""
    raise NotImplementedError("the outbox is being built")


class Mailer:
    """The background sender of one process (being built)."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.database = database

    @classmethod
    def from_settings(cls, settings: Settings, database: Database) -> Mailer:
        return cls(settings, database)

    @property
    def enabled(self) -> bool:
        return self.settings.mail_enabled

    def wake(self) -> None:
        """A message was committed: look at the outbox now rather than at the next poll."""

    async def start(self) -> None:
        """Start delivering (called once the app serves)."""

    async def close(self) -> None:
        """Stop delivering; what is not sent yet stays in the outbox for the next start."""
