"""Password hashing: argon2id by default, bcrypt accepted and upgraded, never on the event loop."""

from __future__ import annotations

import asyncio
import secrets
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from passlib.context import CryptContext

from .config import Settings


def normalize_password(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


@dataclass(frozen=True)
class Verification:
    ok: bool
    new_hash: str | None


class PasswordHasher:
    """Hashes and verifies in a bounded thread pool, sized to the cores by default."""

    def __init__(self, settings: Settings) -> None:
        self.context = CryptContext(
            schemes=["argon2", "bcrypt"],
            default="argon2",
            deprecated=["bcrypt"],
            argon2__type="ID",
            argon2__memory_cost=settings.argon2_memory_cost,
            argon2__time_cost=settings.argon2_time_cost,
            argon2__parallelism=settings.argon2_parallelism,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=settings.hash_workers, thread_name_prefix="password-hash"
        )
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._hash, password)

    async def verify(self, password: str, stored_hash: str | None) -> Verification:
        """Check ``password``; with no stored hash, a dummy is verified so timing is the same."""
        known = stored_hash is not None
        checked = stored_hash if stored_hash is not None else await self.dummy_hash()
        result = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._verify_and_update, password, checked
        )
        return result if known else Verification(ok=False, new_hash=None)

    async def dummy_hash(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(24))
        return self._dummy_hash

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _hash(self, password: str) -> str:
        return self.context.hash(normalize_password(password))

    def _verify_and_update(self, password: str, stored_hash: str) -> Verification:
        try:
            ok, new_hash = self.context.verify_and_update(normalize_password(password), stored_hash)
        except (ValueError, TypeError):
            # An unknown or corrupt stored hash, or a password bcrypt refuses: not a match.
            return Verification(ok=False, new_hash=None)
        return Verification(ok=bool(ok), new_hash=new_hash)
