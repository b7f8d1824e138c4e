"""Password hashing: argon2id by default, legacy hashes accepted and upgraded, never on the loop.

Legacy hashes are those of the Flask apps whose users we import (``service/ops/importer.py``):
werkzeug's ``pbkdf2:<digest>:<iterations>$salt$hex`` and ``scrypt:<n>:<r>:<p>$salt$hex``, and
flask-bcrypt's ``$2b$`` (also ``$2a$``/``$2y$``). A successful login with one returns an argon2id
hash in ``Verification.new_hash``, which ``Accounts.verify_credentials`` stores.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import secrets
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from passlib.context import CryptContext
from werkzeug.security import check_password_hash

from service.core.config import Settings
from service.core.errors import HashingBusy
from service.core.metrics import HASH_QUEUE_DEPTH, HASH_SECONDS

T = TypeVar("T")

# bcrypt reads at most 72 bytes of the password.
BCRYPT_MAX_BYTES = 72
# Werkzeug hashes carry their own cost; beyond these a stored hash would pin a hashing thread (or
# its memory) for too long, so it is refused. Werkzeug's defaults are 1,000,000 iterations and
# 32 MiB (n=32768, r=8, p=1).
MAX_PBKDF2_ITERATIONS = 10_000_000
MAX_SCRYPT_BYTES = 256 * 1024 * 1024

_WERKZEUG_HASH = re.compile(
    r"(?P<method>pbkdf2(?::[A-Za-z0-9_-]+(?::\d{1,12})?)?|scrypt(?::\d{1,12}:\d{1,6}:\d{1,6})?)"
    r"\$[^$]+\$[0-9a-f]+"
)
_BCRYPT_HASH = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")

LegacyScheme = Literal["werkzeug", "bcrypt"]


def normalize_password(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def legacy_scheme(stored_hash: str) -> LegacyScheme | None:
    """``"werkzeug"`` or ``"bcrypt"`` for a hash in a legacy format this service verifies."""
    if _BCRYPT_HASH.fullmatch(stored_hash):
        return "bcrypt"
    match = _WERKZEUG_HASH.fullmatch(stored_hash)
    if match is not None and _werkzeug_cost_is_bounded(match["method"]):
        return "werkzeug"
    return None


def _werkzeug_cost_is_bounded(method: str) -> bool:
    name, *params = method.split(":")
    if name == "pbkdf2":
        return len(params) < 2 or int(params[1]) <= MAX_PBKDF2_ITERATIONS
    if not params:
        return True  # werkzeug's default scrypt parameters
    n, r, p = (int(param) for param in params)
    return 128 * n * r * p <= MAX_SCRYPT_BYTES


@dataclass(frozen=True)
class Verification:
    ok: bool
    new_hash: str | None


def _timed(job: Callable[..., T], *args: Any) -> tuple[T, float]:
    """Run ``job`` in the hashing thread; its result and the seconds it took there."""
    started = time.perf_counter()
    result = job(*args)
    return result, time.perf_counter() - started


def lower_thread_priority(nice: int) -> None:
    """Make the calling thread ``nice`` steps nicer than it is (Linux, where niceness is per
    thread; elsewhere nothing). Threads it starts inherit it (argon2's lanes)."""
    if nice <= 0 or sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + nice))
    except OSError:  # a sandbox that forbids it: hashing still works, at normal priority
        return


class PasswordHasher:
    """Hashes and verifies in a bounded thread pool, sized to the cores by default.

    Admission is by time, not by count: every job's duration is measured (a moving average,
    seeded by the start-up hash), and a new job is refused with 503 + Retry-After only when
    the wait it would have before a thread is free, the jobs ahead of it spread over the
    threads at the measured average, exceeds ``hash_max_wait`` seconds. A burst that the pool
    clears in time is served whole; a storm it cannot is shed instead of queueing without end.
    ``hash_queue``, when set, also caps the jobs running or waiting.

    The hashing threads run at a lower CPU priority (``hash_nice``): a storm of logins, each
    a quarter of a second of CPU, then takes the cores only when the cheap requests (token
    checks) leave them idle, instead of multiplying their latency. Logins alone still get all
    the cores; under full load they slow down, the measured durations grow with them, and the
    admission sheds sooner.
    """

    # Weight of the newest duration in the moving average.
    SMOOTHING = 0.2

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
        self.workers = settings.hash_workers
        self._executor = ThreadPoolExecutor(
            max_workers=settings.hash_workers,
            thread_name_prefix="password-hash",
            initializer=lower_thread_priority,
            initargs=(settings.hash_nice,),
        )
        self._dummy_hash: str | None = None
        self.max_wait = settings.hash_max_wait
        self.queue_limit = settings.hash_queue  # 0: no cap on the count
        self.pending = 0
        self.average_seconds: float | None = None

    def observe(self, seconds: float) -> None:
        """Fold one measured job duration into the moving average."""
        if self.average_seconds is None:
            self.average_seconds = seconds
        else:
            self.average_seconds += self.SMOOTHING * (seconds - self.average_seconds)

    def expected_wait(self) -> float:
        """Seconds a job submitted now would wait for a thread: the full rounds of the jobs
        ahead of it (running or waiting), at the measured average duration."""
        if self.average_seconds is None:
            return 0.0
        return (self.pending // self.workers) * self.average_seconds

    async def _run(self, operation: str, job: Callable[..., T], *args: Any) -> T:
        wait = self.expected_wait()
        if wait > self.max_wait or (self.queue_limit and self.pending >= self.queue_limit):
            raise HashingBusy(max(1, math.ceil(wait - self.max_wait)))
        self.pending += 1
        HASH_QUEUE_DEPTH.inc()
        try:
            result, seconds = await asyncio.get_running_loop().run_in_executor(
                self._executor, _timed, job, *args
            )
        finally:
            self.pending -= 1
            HASH_QUEUE_DEPTH.dec()
        self.observe(seconds)
        HASH_SECONDS.labels(operation).observe(seconds)
        return result

    async def hash(self, password: str) -> str:
        return await self._run("hash", self._hash, password)

    async def verify(self, password: str, stored_hash: str | None) -> Verification:
        """Check ``password``; with no stored hash, a dummy is verified so timing is the same."""
        known = stored_hash is not None
        checked = stored_hash if stored_hash is not None else await self.dummy_hash()
        result = await self._run("verify", self._verify_and_update, password, checked)
        return result if known else Verification(ok=False, new_hash=None)

    async def dummy_hash(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(24))
        return self._dummy_hash

    def recognizes(self, stored_hash: str) -> bool:
        """Whether ``stored_hash`` is in a format this hasher can verify (cheap, no hashing)."""
        return legacy_scheme(stored_hash) is not None or self._is_argon2(stored_hash)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _hash(self, password: str) -> str:
        return self.context.hash(normalize_password(password))

    def _verify_and_update(self, password: str, stored_hash: str) -> Verification:
        scheme = legacy_scheme(stored_hash)
        if scheme is not None:
            return self._verify_legacy(scheme, password, stored_hash)
        if not self._is_argon2(stored_hash):
            # Unknown, or bcrypt outside the legacy formats (crypt_blowfish's buggy $2x$): no match.
            return Verification(ok=False, new_hash=None)
        try:
            ok, new_hash = self.context.verify_and_update(normalize_password(password), stored_hash)
        except (ValueError, TypeError):
            # A corrupt stored hash: not a match.
            return Verification(ok=False, new_hash=None)
        return Verification(ok=bool(ok), new_hash=new_hash)

    def _is_argon2(self, stored_hash: str) -> bool:
        scheme: str | None = self.context.identify(stored_hash, required=False)
        return scheme == "argon2"

    def _verify_legacy(self, scheme: LegacyScheme, password: str, stored_hash: str) -> Verification:
        """Check a legacy hash; on a match, the argon2id hash that replaces it.

        The old apps hashed the password exactly as typed, this service hashes its NFKC form. The
        raw password is tried first (what the old app saw), then its NFKC form (the user now
        types a composed or compatibility variant of it). Either way the password accepted has
        the same NFKC form as the one first hashed, so nothing is accepted that the upgraded hash
        would refuse. One gap remains until the upgrade: an old hash of a non-NFKC password
        ("ﬁsh") does not accept its NFKC form ("fish"); it does once upgraded.
        """
        normalized = normalize_password(password)
        for candidate in dict.fromkeys((password, normalized)):
            if self._legacy_matches(scheme, candidate, stored_hash):
                return Verification(ok=True, new_hash=self._hash(password))
        return Verification(ok=False, new_hash=None)

    def _legacy_matches(self, scheme: LegacyScheme, candidate: str, stored_hash: str) -> bool:
        try:
            if scheme == "werkzeug":
                return check_password_hash(stored_hash, candidate)
            # Never truncated: bcrypt reads only 72 bytes, and some bcrypt/libpass versions drop
            # the rest silently, which would accept any password sharing those 72 bytes. A longer
            # password is no match, whatever the backend; such legacy users reset their password.
            if len(candidate.encode()) > BCRYPT_MAX_BYTES:
                return False
            return self.context.verify(candidate, stored_hash)
        except (ValueError, TypeError, OverflowError):
            # A corrupt hash (unknown digest, bad scrypt parameters, non-hex) or a password that
            # cannot be encoded (lone surrogates): not a match, never an error.
            return False
