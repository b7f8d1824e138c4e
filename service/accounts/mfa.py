"""The second factor's use cases: TOTP (RFC 6238) with recovery codes, and the login step that
completes a password login of a user who has a second factor (``mfa_token``).

Passkeys are ``service/accounts/passkeys.py``; a passkey completes the login step through
``Passkeys.verify_second_factor``. Nothing here knows HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyotp
import segno
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from service.accounts.sessions import ClientInfo, TokenPair, utc_now
from service.accounts.throttle import MFA_SCOPE
from service.core.audit import audit
from service.core.config import resolve_jwt_secret
from service.core.errors import (
    AccountDisabled,
    EmailNotVerified,
    MfaConflict,
    MfaInvalid,
    MfaRequired,
    NotFound,
    TooManyAttempts,
)
from service.core.secretbox import SealedValueInvalid, SecretBox
from service.store.models import AuthChallenge, Passkey, User
from service.store.unit_of_work import UnitOfWork, unit_of_work

MFA_TOKEN_KIND = "mfa"
TOTP_PERIOD = 30
TOTP_DIGITS = 6
# RFC 6238 §5.2: one time step either side of now, for clocks that drift and codes typed late.
TOTP_TOLERANCE_STEPS = 1
RECOVERY_CODE_COUNT = 10
# 10 characters of base32 (50 bits), shown as two groups of five.
RECOVERY_CODE_LENGTH = 10
RECOVERY_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
TOTP_CODE = re.compile(r"[0-9]{6}")
STEP_EXPIRED = "This login step is unknown, used or expired: log in with your password again."

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
        material = key or resolve_jwt_secret(settings)
        self.box = SecretBox(material, info=b"auth-service mfa v1")
        self._code_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"auth-service recovery v1"
        ).derive(material)
        # The wall clock, in seconds; tests move it.
        self.clock: Callable[[], float] = time.time

    # --- what the user has ----------------------------------------------------------------

    async def status(self, user: User) -> MfaStatus:
        async with unit_of_work(self.accounts.database) as uow:
            factors = await uow.second_factors.factors_for(user.pk)
            passkeys = await uow.passkeys.list_for(user.pk)
        return MfaStatus(
            totp=factors.totp, recovery_codes_left=factors.recovery_codes_left, passkeys=passkeys
        )

    # --- the login step -------------------------------------------------------------------

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

    async def is_cookie_login(self, mfa_token: str) -> bool:
        """Whether the live ``mfa_token`` came from a browser's cookie login (``/session``)."""
        async with unit_of_work(self.accounts.database) as uow:
            live = await uow.challenges.live(
                token_handle(mfa_token), kind=MFA_TOKEN_KIND, now=utc_now()
            )
        return live is not None and bool(live.data.get("cookie"))

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
        asked); MfaInvalid (throttled per account) otherwise.

        A wrong answer leaves the mfa_token live (until it expires): the tries are counted by
        the throttle instead, per account from every address. The token is spent in the same
        transaction as the code it was completed with, so two concurrent completions (of one
        token, or with one code) let exactly one in.
        """
        handle = token_handle(mfa_token)
        now = utc_now()
        async with unit_of_work(self.accounts.database) as uow:
            challenge = await uow.challenges.live(handle, kind=MFA_TOKEN_KIND, now=now)
            user = (
                await uow.users.by_pk(challenge.user_pk)
                if challenge is not None and challenge.user_pk is not None
                else None
            )
        if challenge is None or user is None or not _still_bound(challenge, user):
            audit(
                "login-mfa", outcome="failed", user_id=user.id if user else None, reason="mfa-token"
            )
            raise MfaInvalid(STEP_EXPIRED)
        # Re-checked here: the account may have changed since the password was right.
        if not user.is_active:
            audit("login", outcome="failed", user_id=user.id, reason="disabled", step="mfa")
            raise AccountDisabled()
        if self.accounts.require_verified_email and not user.email_verified:
            audit("login", outcome="refused", user_id=user.id, reason="email-not-verified")
            raise EmailNotVerified()
        left: int | None = None
        # A refused passkey is audited by Passkeys.verify_second_factor itself.
        refusal = "wrong-code" if credential is None else None
        async with self._attempt(
            user, event="login-mfa", client=client, refusal=refusal
        ) as succeeded:
            if credential is not None:
                # The assertion must answer the options made for this very login step.
                kind = await self.accounts.passkeys.verify_second_factor(
                    user, credential, mfa_token=mfa_token
                )
                amr = ["pwd", kind]
                method = "passkey"
                async with unit_of_work(self.accounts.database, write=True) as uow:
                    await _spend_step(uow, challenge)
                    await uow.commit()
            elif code is not None:
                amr = ["pwd", "otp"]
                async with unit_of_work(self.accounts.database, write=True) as uow:
                    await _spend_step(uow, challenge)
                    method = await self._accept_code(uow, user, code)
                    if method == "recovery_code":
                        left = (await uow.second_factors.factors_for(user.pk)).recovery_codes_left
                    await uow.commit()
            else:
                raise MfaInvalid("Send a code or a passkey's credential.")
            succeeded()
        if method == "recovery_code":
            audit("recovery-code-used", user_id=user.id, left=left)
        audit("login-mfa", user_id=user.id, method=method)
        pair = await self.accounts.start_session(
            user, client=client, with_csrf=bool(challenge.data.get("cookie")), amr=amr
        )
        return MfaLogin(user=user, pair=pair, recovery_codes_left=left)

    # --- TOTP -----------------------------------------------------------------------------

    async def begin_totp_setup(self, user: User) -> TotpSetup:
        """A new secret, kept unconfirmed until ``confirm_totp``; MfaConflict when TOTP is on
        already (turn it off first: a setup never silently replaces a working factor)."""
        secret = pyotp.random_base32()
        sealed = self.box.seal(secret, purpose=_purpose(user))
        async with unit_of_work(self.accounts.database, write=True) as uow:
            if not await uow.second_factors.put_pending_totp(user.pk, sealed, utc_now()):
                raise MfaConflict("Your authenticator app is on already; turn it off first.")
            await uow.commit()
        issuer = self.accounts.tokens.issuer
        uri = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD).provisioning_uri(
            name=user.username, issuer_name=issuer
        )
        audit("mfa-setup", user_id=user.id, method="totp")
        return TotpSetup(secret=secret, otpauth_uri=uri, qr_svg=_qr_svg(uri))

    async def confirm_totp(self, user: User, code: str, *, client: ClientInfo) -> list[str]:
        """Turn TOTP on with a first valid code; the 10 new recovery codes, shown once."""
        async with self._attempt(user, event="mfa-confirm", client=client) as succeeded:
            async with unit_of_work(self.accounts.database, write=True) as uow:
                factor = await uow.second_factors.totp_for(user.pk)
                if factor is None or factor.confirmed_at is not None:
                    raise MfaConflict("Set up your authenticator app first.")
                step = self._matching_step(self._secret(user, factor.secret), code)
                now = utc_now()
                if step is None or not await uow.second_factors.accept_step(
                    user.pk, step, confirming=True, now=now
                ):
                    raise MfaInvalid("The code is wrong or expired; enter the current one.")
                codes = await self._new_recovery_codes(uow, user)
                await uow.commit()
            succeeded()
        audit("mfa-enabled", user_id=user.id, method="totp")
        return codes

    async def disable_totp(self, user: User, code: str, *, client: ClientInfo) -> None:
        """Turn TOTP off with a current code (from the app, or a recovery code). Recovery codes
        go too when no passkey is left to complete a login."""
        async with self._attempt(user, event="mfa-disable", client=client) as succeeded:
            async with unit_of_work(self.accounts.database, write=True) as uow:
                factor = await uow.second_factors.totp_for(user.pk)
                if factor is None or factor.confirmed_at is None:
                    raise NotFound("Your authenticator app is not on.")
                await self._accept_code(uow, user, code)
                await uow.second_factors.delete_totp(user.pk)
                if not (await uow.second_factors.factors_for(user.pk)).any:
                    await uow.second_factors.delete_recovery_codes(user.pk)
                await uow.commit()
            succeeded()
        audit("mfa-disabled", user_id=user.id, method="totp")

    # --- recovery codes -------------------------------------------------------------------

    async def regenerate_recovery_codes(self, user: User) -> list[str]:
        """A new set; the old one stops working. Only for a user with a second factor."""
        async with unit_of_work(self.accounts.database, write=True) as uow:
            if not (await uow.second_factors.factors_for(user.pk)).any:
                raise MfaConflict("Turn on a second factor first.")
            codes = await self._new_recovery_codes(uow, user)
            await uow.commit()
        audit("recovery-codes-regenerated", user_id=user.id)
        return codes

    # --- the operator ---------------------------------------------------------------------

    async def reset(self, login: str) -> User:
        """The operator's ``users reset-mfa``: every second factor removed, sessions ended."""
        now = utc_now()
        async with unit_of_work(self.accounts.database, write=True) as uow:
            user = await uow.users.by_login(login)
            if user is None:
                raise NotFound(f"No user {login!r}.")
            await uow.second_factors.delete_all(user.pk)
            await uow.challenges.spend_all_for_user(user.pk, now=now)
            user.token_version += 1
            await uow.families.revoke_all(user.pk, reason="mfa-reset", now=now)
            await self.accounts.publish_revocations(versions=[(str(user.id), user.token_version)])
            await uow.commit()
        await self.accounts.changed()
        audit("mfa-reset", user_id=user.id)
        return user

    # --- helpers --------------------------------------------------------------------------

    @asynccontextmanager
    async def _attempt(
        self,
        user: User,
        *,
        event: str,
        client: ClientInfo,
        refusal: str | None = "wrong-code",
    ) -> AsyncIterator[Callable[[], None]]:
        """A second-factor answer under the throttle: a wrong one (MfaInvalid) keeps its place
        in the account's windows and is audited as ``event`` failed (``refusal`` its reason;
        None: audited already); the block calls the callable it gets on success."""

        def refused() -> None:
            if refusal is not None:
                audit(event, outcome="failed", user_id=user.id, reason=refusal)

        throttle = self.accounts.throttle
        if throttle is None:
            try:
                yield lambda: None
            except MfaInvalid:
                refused()
                raise
            return
        try:
            async with throttle.attempting(
                MFA_SCOPE,
                account=str(user.id),
                ip=client.address,
                counts=lambda error: isinstance(error, MfaInvalid),
            ) as outcome:
                try:
                    yield outcome.succeeded
                except MfaInvalid:
                    refused()
                    raise
        except TooManyAttempts:
            audit(event, outcome="throttled", user_id=user.id)
            raise

    async def _accept_code(self, uow: UnitOfWork, user: User, code: str) -> str:
        """Accept a TOTP code (a later step than any accepted before) or an unused recovery
        code, in ``uow``; which it was, or MfaInvalid."""
        typed = code.strip()
        if TOTP_CODE.fullmatch(typed):
            factor = await uow.second_factors.totp_for(user.pk)
            if factor is not None and factor.confirmed_at is not None:
                step = self._matching_step(self._secret(user, factor.secret), typed)
                if step is not None and await uow.second_factors.accept_step(
                    user.pk, step, confirming=False, now=utc_now()
                ):
                    return "totp"
            raise MfaInvalid("The code is wrong or was used already; enter the next one.")
        normalized = normalize_recovery_code(typed)
        if normalized is not None and await uow.second_factors.use_recovery_code(
            user.pk, self._code_hash(user, normalized), utc_now()
        ):
            return "recovery_code"
        raise MfaInvalid("The code is wrong, or the recovery code was used already.")

    def _matching_step(self, secret: str, code: str) -> int | None:
        return matching_step(secret, code, now=self.clock())

    def _secret(self, user: User, sealed: str) -> str:
        try:
            return self.box.open(sealed, purpose=_purpose(user))
        except SealedValueInvalid:
            # Sealed under another key (AUTH_MFA_KEY or the JWT secret changed): no code can
            # match; the operator's ``users reset-mfa`` is the way back.
            raise MfaInvalid(
                "Your authenticator app's key cannot be read; ask an operator to reset it."
            ) from None

    async def _new_recovery_codes(self, uow: UnitOfWork, user: User) -> list[str]:
        codes = [_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        hashes_ = [self._code_hash(user, code.replace("-", "")) for code in codes]
        await uow.second_factors.replace_recovery_codes(user.pk, hashes_, utc_now())
        return codes

    def _code_hash(self, user: User, normalized: str) -> str:
        message = f"{user.id}:{normalized}".encode()
        return hmac.new(self._code_key, message, hashlib.sha256).hexdigest()


def matching_step(secret: str, code: str, *, now: float) -> int | None:
    """The time step (the one of ``now``, or one either side) whose code ``code`` is; None if
    none. Every candidate is compared (in constant time), so the answer's timing does not say
    which step matched."""
    typed = code.strip()
    if not TOTP_CODE.fullmatch(typed):
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD)
    now_step = int(now) // TOTP_PERIOD
    found: int | None = None
    for step in range(now_step + TOTP_TOLERANCE_STEPS, now_step - TOTP_TOLERANCE_STEPS - 1, -1):
        if hmac.compare_digest(totp.generate_otp(step), typed) and found is None:
            found = step
    return found


def _purpose(user: User) -> str:
    return f"totp:{user.id}"


def _still_bound(challenge: AuthChallenge, user: User) -> bool:
    """The login that made the mfa_token is still the user's: same password, no
    logout-everywhere (or disabling, or role removal) since."""
    data = challenge.data
    return (
        data.get("pwd") == password_fingerprint(user.password_hash)
        and data.get("ver") == user.token_version
    )


async def _spend_step(uow: UnitOfWork, challenge: AuthChallenge) -> None:
    """Spend the mfa_token in ``uow``, the binding checked again in that transaction (the
    first check was a read before the code): MfaInvalid if either fails."""
    if not await uow.challenges.spend(challenge.handle, kind=MFA_TOKEN_KIND, now=utc_now()):
        raise MfaInvalid(STEP_EXPIRED)
    user = await uow.users.by_pk(challenge.user_pk) if challenge.user_pk is not None else None
    if user is None or not _still_bound(challenge, user):
        raise MfaInvalid(STEP_EXPIRED)


def _recovery_code() -> str:
    raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
    return f"{raw[:5]}-{raw[5:]}"


def normalize_recovery_code(typed: str) -> str | None:
    """A recovery code as typed (any case, dashes and spaces anywhere) in its stored form."""
    compact = re.sub(r"[\s-]", "", typed).lower()
    if len(compact) != RECOVERY_CODE_LENGTH or not set(compact) <= set(RECOVERY_ALPHABET):
        return None
    return compact


def _qr_svg(uri: str) -> str:
    """The otpauth URI as a standalone SVG document (a namespace, no XML declaration)."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", xmldecl=False, svgns=True, scale=5, border=2)
    return out.getvalue().decode()


def token_handle(token: str) -> str:
    """How a bearer secret (an ``mfa_token``) is stored: its SHA-256, never itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def password_fingerprint(password_hash: str) -> str:
    """What binds a challenge to the password it was made under (not the hash itself)."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


def user_handle(user_id: uuid.UUID) -> bytes:
    """The WebAuthn user handle of a user: the 16 bytes of its public id."""
    return user_id.bytes
