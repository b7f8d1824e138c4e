"""Email verification and password reset: the links mailed to a user, and what following them does.

A link carries a signed token (``service/core/tokens.py``, the service's key) whose audience is
its purpose (``<AUTH_JWT_AUDIENCE>:verify-email``, ``<AUTH_JWT_AUDIENCE>:reset-password``): no
access or refresh token is accepted as a link, and no link as an access or refresh token, as
each check pins its own audience. Nothing about a link is stored; it is bound instead to what
following it changes, so that it works once:

- a verification link names the address it was sent to (a digest) and the user's
  ``email_version``, which every email change bumps: once the address is verified, or changed
  (even back to the same one), the link is dead;
- a reset link names a digest of the current password hash and of the address: once the
  password changes (by this link, ``POST /me/password``, an administrator...) or the address
  does, the link is dead. The digest reveals nothing of the hash (a SHA-256 of a salted hash).

Messages are queued in the outbox (``service/accounts/mail.py``) in the transaction of the
change that causes them, and links are built from ``AUTH_PUBLIC_URL`` only, never from a
request's ``Host``. A forgotten-password request does the same work whether or not the address
has an account (the lookup, a token signed, a message rendered and written), and is throttled
by the address typed: neither the answer, nor its timing, nor the throttle tells which
addresses have accounts.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.orm.attributes import set_committed_value

from service.accounts.mail import Mail, queue_mail
from service.accounts.throttle import FORGOT_SCOPE, RESET_SCOPE, VERIFY_REQUEST_SCOPE
from service.core.audit import audit
from service.core.errors import (
    APIError,
    MailDisabled,
    ResetTokenInvalid,
    TokenInvalid,
    TooManyAttempts,
    ValidationFailed,
    VerificationInvalid,
)
from service.core.password_policy import password_problem
from service.core.tokens import Claims, TokenSettings, encode_token, verify_token
from service.store.models import User
from service.store.unit_of_work import UnitOfWork, unit_of_work

if TYPE_CHECKING:
    from service.accounts.accounts import Accounts
    from service.accounts.sessions import ClientInfo

VERIFY_PURPOSE = "verify-email"
RESET_PURPOSE = "reset-password"
VERIFY_PATH = "/verify-email"
RESET_PATH = "/reset-password"
# The mail templates (service/accounts/mail_templates/<name>.{subject.txt,txt,html}).
VERIFY_TEMPLATE = "verify-email"
RESET_TEMPLATE = "reset-password"
EMAIL_CHANGED_TEMPLATE = "email-changed"
# What a forgotten-password request for an address without an account signs and renders, so
# that it costs what a real one costs; never sent (its transaction is rolled back).
NOBODY = uuid.UUID(int=0)
NOBODY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$" + "A" * 22 + "$" + "A" * 43


def digest(label: str, value: str) -> str:
    """A short one-way digest of ``value`` (128 bits, base64url), separated by ``label``."""
    raw = hashlib.sha256(f"{label}\0{value}".encode("utf-8", "surrogatepass")).digest()
    return base64.urlsafe_b64encode(raw[:16]).rstrip(b"=").decode()


def duration(seconds: int) -> str:
    """``seconds`` in words, as a mail says how long its link stays valid."""
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def greeting_name(user: User) -> str:
    return user.name or user.username


class EmailFlows:
    """The use cases behind ``/email/verify*`` and ``/password/*`` (and the mail that signup
    and an email change send), for one ``Accounts``."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.settings = accounts.database.settings
        # The time links are signed and checked with: tests move it instead of sleeping.
        self.clock: Callable[[], float] = time.time
        self.verify_tokens = _purpose_tokens(accounts.tokens, VERIFY_PURPOSE)
        self.reset_tokens = _purpose_tokens(accounts.tokens, RESET_PURPOSE)

    @property
    def enabled(self) -> bool:
        return self.accounts.mailer.enabled

    def require_enabled(self) -> None:
        if not self.enabled:
            raise MailDisabled()

    def link(self, path: str, token: str) -> str:
        return f"{self.settings.public_url}{path}?token={token}"

    # --- verification ---------------------------------------------------------------------

    def verification_token(self, user: User) -> str:
        return encode_token(
            self.verify_tokens,
            subject=str(user.id),
            token_type="access",
            now=self.clock(),
            ttl=self.settings.verify_token_ttl,
            extra_claims={
                "use": VERIFY_PURPOSE,
                "em": digest("email", user.email),
                "ev": user.email_version,
            },
        ).token

    async def queue_verification(self, uow: UnitOfWork, user: User) -> bool:
        """Queue a verification link to ``user``'s address in ``uow``'s transaction; False (and
        nothing queued) when mail is off. The caller commits, then calls ``sent()``."""
        if not self.enabled:
            return False
        link = self.link(VERIFY_PATH, self.verification_token(user))
        await queue_mail(
            uow,
            Mail(
                to=user.email,
                template=VERIFY_TEMPLATE,
                context={
                    "name": greeting_name(user),
                    "email": user.email,
                    "link": link,
                    "valid_for": duration(self.settings.verify_token_ttl),
                },
            ),
        )
        return True

    async def queue_email_changed(self, uow: UnitOfWork, user: User, *, old_email: str) -> bool:
        """The new address gets a verification link, the old one a notice of the change."""
        if not self.enabled:
            return False
        await queue_mail(
            uow,
            Mail(
                to=old_email,
                template=EMAIL_CHANGED_TEMPLATE,
                context={
                    "name": greeting_name(user),
                    "old_email": old_email,
                    "new_email": user.email,
                    "login_link": f"{self.settings.public_url}/login",
                },
            ),
        )
        return await self.queue_verification(uow, user)

    def sent(self) -> None:
        """Messages were committed: the sender looks at the outbox now."""
        self.accounts.mailer.wake()

    async def request_verification(self, user_id: uuid.UUID, *, client: ClientInfo) -> None:
        """A new verification link to the user's current address (none when it is verified)."""
        self.require_enabled()
        await self._throttled(VERIFY_REQUEST_SCOPE, f"user:{user_id}", client, "verify-request")
        async with unit_of_work(self.accounts.database, write=True) as uow:
            user = await uow.users.by_id(user_id)
            if user is None:
                raise TokenInvalid("The token's user does not exist.")
            if user.email_verified:
                audit("verify-request", outcome="already-verified", user_id=user.id)
                return
            await self.queue_verification(uow, user)
            await uow.commit()
        self.sent()
        audit("verify-request", user_id=user_id)

    async def check_verification_token(self, token: str) -> User:
        """The user a verification link is still good for (the page's GET: nothing changes)."""
        self.require_enabled()
        claims = self._decode(token, self.verify_tokens, VERIFY_PURPOSE, VerificationInvalid)
        async with unit_of_work(self.accounts.database) as uow:
            user = await uow.users.by_id(_uuid(claims.subject, VerificationInvalid))
        return _verification_target(user, claims)

    async def verify_email(self, token: str) -> User:
        """Mark the address the link was sent to as verified; VerificationInvalid unless the
        link is genuine, unexpired, and for the user's current, still unverified address."""
        self.require_enabled()
        claims = self._decode(token, self.verify_tokens, VERIFY_PURPOSE, VerificationInvalid)
        user_id = _uuid(claims.subject, VerificationInvalid)
        async with unit_of_work(self.accounts.database, write=True) as uow:
            try:
                user = _verification_target(await uow.users.by_id(user_id), claims)
            except VerificationInvalid:
                audit("email-verify", outcome="refused", user_id=user_id)
                raise
            # Compare and set: of two requests with one link, one verifies and one is refused.
            verified = await uow.session.execute(
                update(User)
                .where(
                    User.pk == user.pk,
                    User.email_verified.is_(False),
                    User.email_version == user.email_version,
                )
                .values(email_verified=True)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(verified) != 1:
                audit("email-verify", outcome="used", user_id=user_id)
                raise VerificationInvalid()
            await uow.commit()
        set_committed_value(user, "email_verified", True)
        await self.accounts.changed()
        audit("email-verify", user_id=user.id)
        return user

    # --- password reset -------------------------------------------------------------------

    def reset_token(self, subject: uuid.UUID, *, email: str, password_hash: str) -> str:
        return encode_token(
            self.reset_tokens,
            subject=str(subject),
            token_type="access",
            now=self.clock(),
            ttl=self.settings.reset_token_ttl,
            extra_claims={
                "use": RESET_PURPOSE,
                "em": digest("email", email),
                "ph": digest("password", password_hash),
            },
        ).token

    async def forgot_password(self, email: str, *, client: ClientInfo) -> None:
        """Mail a reset link when ``email`` is an active account's address; otherwise do the
        same work and send nothing. The caller answers the same either way."""
        self.require_enabled()
        typed = email.strip().lower()
        await self._throttled(FORGOT_SCOPE, f"email:{digest('email', typed)}", client, "forgot")
        async with unit_of_work(self.accounts.database, write=True) as uow:
            user = await uow.users.by_login(typed) if "@" in typed else None
            known = user is not None and user.is_active
            token = (
                self.reset_token(user.id, email=user.email, password_hash=user.password_hash)
                if user is not None and known
                else self.reset_token(NOBODY, email=typed, password_hash=NOBODY_HASH)
            )
            await queue_mail(
                uow,
                Mail(
                    to=user.email if user is not None and known else typed,
                    template=RESET_TEMPLATE,
                    context={
                        "name": greeting_name(user) if user is not None and known else typed,
                        "link": self.link(RESET_PATH, token),
                        "valid_for": duration(self.settings.reset_token_ttl),
                    },
                ),
            )
            if known:
                await uow.commit()
            # else: the message is rolled back with the transaction, never sent.
        # Either way: the sender's look at the outbox costs this process the same work after
        # the answer (measured by bench/enumeration_reset.py: woken only for a message sent,
        # the next answer was ~2.6 ms slower after an existing address than after an unknown one).
        self.sent()
        reason = "sent" if known else "unknown-address" if user is None else "disabled"
        audit("password-forgot", outcome=reason, user_id=user.id if user else None)

    async def check_reset_token(self, token: str) -> User:
        """The user a reset link is still good for (the reset page's GET: nothing changes)."""
        self.require_enabled()
        claims = self._decode(token, self.reset_tokens, RESET_PURPOSE, ResetTokenInvalid)
        async with unit_of_work(self.accounts.database) as uow:
            user = await uow.users.by_id(_uuid(claims.subject, ResetTokenInvalid))
        return _reset_target(user, claims)

    async def reset_password(self, token: str, new_password: str, *, client: ClientInfo) -> None:
        """Set a new password with a reset link, and end every session and earlier token."""
        self.require_enabled()
        await self._throttled(RESET_SCOPE, None, client, "password-reset")
        claims = self._decode(token, self.reset_tokens, RESET_PURPOSE, ResetTokenInvalid)
        user_id = _uuid(claims.subject, ResetTokenInvalid)
        # Each user's resets are limited too: a link once leaked cannot be replayed in a loop.
        await self._throttled(RESET_SCOPE, f"user:{user_id}", client, "password-reset")
        async with unit_of_work(self.accounts.database) as uow:
            user = _reset_target(await uow.users.by_id(user_id), claims)
        problem = password_problem(new_password, username=user.username, email=user.email)
        if problem is not None:
            raise ValidationFailed(
                [{"loc": ["body", "new_password"], "msg": problem}], detail=problem
            )
        old_hash = user.password_hash
        new_hash = await self.accounts.hasher.hash(new_password)
        async with unit_of_work(self.accounts.database, write=True) as uow:
            # Compare and set on the hash the link is bound to: of two resets with one link (or
            # a reset racing a password change), one wins and the other is refused.
            changed = await uow.session.execute(
                update(User)
                .where(User.pk == user.pk, User.password_hash == old_hash)
                .values(
                    password_hash=new_hash,
                    token_version=User.token_version + 1,
                    # Following the link proved the address is the user's.
                    email_verified=True,
                )
                .returning(User.token_version)
                .execution_options(synchronize_session=False)
            )
            version = changed.scalar_one_or_none()
            if version is None:
                audit("password-reset", outcome="used", user_id=user.id)
                raise ResetTokenInvalid()
            await uow.families.revoke_all(user.pk, reason="password-reset", now=_utc(self.clock()))
            await self.accounts.publish_revocations(versions=[(str(user.id), version)])
            await uow.commit()
        await self.accounts.changed()
        audit("password-reset", user_id=user.id)

    # --- helpers --------------------------------------------------------------------------

    def _decode(
        self,
        token: str,
        settings: TokenSettings,
        purpose: str,
        invalid: type[APIError],
    ) -> Claims:
        try:
            claims = verify_token(settings, token, now=self.clock())
        except APIError:
            raise invalid() from None
        if claims.raw.get("use") != purpose:
            raise invalid()
        return claims

    async def _throttled(
        self, scope: str, account: str | None, client: ClientInfo, event: str
    ) -> None:
        throttle = self.accounts.throttle
        if throttle is None:
            return
        try:
            await throttle.attempt(scope, account=account, ip=client.address)
        except TooManyAttempts:
            audit(event, outcome="throttled")
            raise


def _purpose_tokens(tokens: TokenSettings, purpose: str) -> TokenSettings:
    return replace(tokens, audience=f"{tokens.audience}:{purpose}")


def _uuid(value: str, invalid: type[APIError]) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise invalid() from None


def _verification_target(user: User | None, claims: Claims) -> User:
    """The user of a verified verification token, if the link still fits; else the refusal."""
    version = claims.raw.get("ev")
    if (
        user is None
        or not user.is_active
        or user.email_verified
        or claims.raw.get("em") != digest("email", user.email)
        or isinstance(version, bool)
        or version != user.email_version
    ):
        raise VerificationInvalid()
    return user


def _reset_target(user: User | None, claims: Claims) -> User:
    """The user of a verified reset token, if the link still fits them; else the refusal."""
    if (
        user is None
        or not user.is_active
        or claims.raw.get("em") != digest("email", user.email)
        or claims.raw.get("ph") != digest("password", user.password_hash)
    ):
        raise ResetTokenInvalid()
    return user


def _rowcount(result: Any) -> int:
    count: int = result.rowcount
    return count


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
