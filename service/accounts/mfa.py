"""The second factor's use cases: TOTP (RFC 6238) with recovery codes, and the login step that
completes a password login of a user who has a second factor (``mfa_token``).

Passkeys are ``service/accounts/passkeys.py``; a passkey completes the login step through
``Passkeys.verify_second_factor``. Nothing here knows HTTP.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from service.accounts.sessions import ClientInfo, TokenPair, utc_now
from service.core.audit import audit
from service.core.config import resolve_jwt_secret
from service.core.errors import MfaRequired
from service.core.secretbox import SecretBox
from service.store.models import AuthChallenge, Passkey, User
from service.store.unit_of_work import unit_of_work

MFA_TOKEN_KIND = "mfa"

if TYPE_CHECKING:
    from service.accounts.accounts import Accounts


@dataclass(frozen=True)
class MfaStatus:
    """``GET /mfa``: what the user has set up."""

    totp: bool
    recovery_codes_left: int
    passkeys: Sequence[Passkey]


@dataclass(frozen=True)
class TotpSetup:
    """``POST /mfa/totp/setup``: shown once, until confirmed with a code."""

    secret: str
    otpauth_uri: str
    qr_svg: str


@dataclass(frozen=True)
class MfaLogin:
    """A completed login step: the user, the new session's tokens (fresh, with ``amr``), and,
    when a recovery code was used, how many are left."""

    user: User
    pair: TokenPair
    recovery_codes_left: int | None = None


class MfaFlows:
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        settings = accounts.database.settings
        key = settings.mfa_key.get_secret_value().encode() if settings.mfa_key else None
        self.box = SecretBox(key or resolve_jwt_secret(settings), info=b"auth-service mfa v1")

    async def status(self, user: User) -> MfaStatus:
        async with unit_of_work(self.accounts.database) as uow:
            factors = await uow.second_factors.factors_for(user.pk)
            passkeys = await uow.passkeys.list_for(user.pk)
        return MfaStatus(
            totp=factors.totp, recovery_codes_left=factors.recovery_codes_left, passkeys=passkeys
        )

    async def challenge_login(self, user: User, *, client: ClientInfo, with_csrf: bool) -> None:
        """After a correct password: nothing for a user without a second factor; else raise
        MfaRequired with a new single-use ``mfa_token`` bound to this login: its user, whether
        it asked for a cookie session, and the password and token version it was made under
        (a password change or a logout-everywhere kills it)."""
        settings = self.accounts.database.settings
        # A read first: most logins have no second factor and take no write lock for it.
        async with unit_of_work(self.accounts.database) as uow:
            factors = await uow.second_factors.factors_for(user.pk)
        if not factors.any:
            return
        now = utc_now()
        async with unit_of_work(self.accounts.database, write=True) as uow:
            mfa_token = secrets.token_urlsafe(32)
            await uow.challenges.add(
                AuthChallenge(
                    handle=token_handle(mfa_token),
                    kind=MFA_TOKEN_KIND,
                    user_pk=user.pk,
                    data={
                        "cookie": with_csrf,
                        "pwd": password_fingerprint(user.password_hash),
                        "ver": user.token_version,
                    },
                    created_at=now,
                    expires_at=now + timedelta(seconds=settings.mfa_token_ttl),
                )
            )
            await uow.challenges.prune(now)
            await uow.commit()
        audit("login", outcome="mfa-required", user_id=user.id, methods=factors.methods)
        raise MfaRequired(mfa_token, factors.methods, expires_in=settings.mfa_token_ttl)

    async def complete_login(
        self,
        mfa_token: str,
        *,
        code: str | None = None,
        credential: Mapping[str, Any] | None = None,
        client: ClientInfo,
    ) -> MfaLogin:
        """Spend ``mfa_token`` with a TOTP code, a recovery code, or a passkey assertion, and
        start the session the password login would have started (cookie or not, as that login
        asked); MfaInvalid (throttled per account) otherwise."""
        raise NotImplementedError

    async def begin_totp_setup(self, user: User) -> TotpSetup:
        raise NotImplementedError

    async def confirm_totp(self, user: User, code: str, *, client: ClientInfo) -> list[str]:
        """Turn TOTP on with a first valid code; the 10 new recovery codes, shown once."""
        raise NotImplementedError

    async def disable_totp(self, user: User, code: str, *, client: ClientInfo) -> None:
        raise NotImplementedError

    async def regenerate_recovery_codes(self, user: User) -> list[str]:
        """A new set; the old one stops working."""
        raise NotImplementedError

    async def reset(self, login: str) -> User:
        """The operator's ``users reset-mfa``: every second factor removed, sessions ended."""
        raise NotImplementedError


def token_handle(token: str) -> str:
    """How a bearer secret (an ``mfa_token``) is stored: its SHA-256, never itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def password_fingerprint(password_hash: str) -> str:
    """What binds a challenge to the password it was made under (not the hash itself)."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


def user_handle(user_id: uuid.UUID) -> bytes:
    """The WebAuthn user handle of a user: the 16 bytes of its public id."""
    return user_id.bytes
