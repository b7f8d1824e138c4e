"""Use cases: register, authenticate, issue tokens, resolve a token's user. They own the commits.

Nothing here knows HTTP: callers pass plain values and get models, tokens or APIError exceptions.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from service.accounts.hooks import AuthHooks
from service.accounts.throttle import PASSWORD_SCOPE, Throttle
from service.core.audit import audit
from service.core.errors import (
    AccountDisabled,
    CsrfFailed,
    InvalidCredentials,
    NotFound,
    TokenExpired,
    TokenInvalid,
    TokenReused,
    TokenRevoked,
    TooManyAttempts,
    UserExists,
    ValidationFailed,
)
from service.core.password_policy import password_problem
from service.core.passwords import PasswordHasher, Verification
from service.core.tokens import Claims, TokenSettings, decode_token, encode_token
from service.store.db import Database
from service.store.models import RefreshFamily, User
from service.store.repository import (
    DuplicateUser,
    FamilyRepository,
    RevocationRepository,
    UserRepository,
    load_token_subject,
)


class UnitOfWork:
    """One transaction: repositories share its session; nothing is kept unless ``commit`` runs."""

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
            yield self

    async def commit(self) -> None:
        await self.session.commit()


@asynccontextmanager
async def unit_of_work(database: Database, *, write: bool = False) -> AsyncIterator[UnitOfWork]:
    async with UnitOfWork(database, write=write).begin() as uow:
        yield uow


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    user_id: uuid.UUID
    session_id: uuid.UUID
    csrf: str | None = None
    token_type: str = "Bearer"


@dataclass(frozen=True)
class SessionPolicy:
    """How refresh families behave: the retry grace window and the absolute lifetime."""

    reuse_grace_seconds: int = 10
    family_ttl: int = 30 * 24 * 3600


@dataclass(frozen=True)
class Client:
    """Who is asking, as recorded on the session (device) list."""

    user_agent: str | None = None
    ip: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


async def register(
    database: Database,
    hasher: PasswordHasher,
    *,
    username: str,
    email: str,
    password: str,
    name: str | None = None,
    roles: Sequence[str] = (),
) -> User:
    # A name already taken is refused before the hash is paid for (hashing is the scarce
    # resource); the unique index still decides between concurrent signups of one new name.
    async with unit_of_work(database) as uow:
        taken = await uow.users.taken_field(username=username, email=email)
    if taken is not None:
        raise _user_exists(taken)
    password_hash = await hasher.hash(password)
    async with unit_of_work(database, write=True) as uow:
        try:
            user = await uow.users.add(
                username=username, email=email, password_hash=password_hash, name=name, roles=roles
            )
        except DuplicateUser as exc:
            raise _user_exists(exc.field) from exc
        await uow.commit()
    audit("signup", user_id=user.id)
    return user


def _user_exists(field: str | None) -> UserExists:
    detail = {
        "username": "This username is taken.",
        "email": "This email is already registered.",
    }.get(field or "")
    audit("signup", outcome="conflict", field=field)
    return UserExists(detail, field=field)


async def authenticate(
    database: Database,
    hasher: PasswordHasher,
    *,
    login: str,
    password: str,
    throttle: Throttle | None = None,
    ip: str = "unknown",
) -> User:
    """The user for these credentials, or InvalidCredentials (TooManyAttempts when throttled).

    Unknown users and disabled accounts cost a hash verification too, and every failure gives the
    same error, so neither the answer nor its timing tells whether an account exists. The
    attempt takes its place in the throttle's windows before the password is checked, counted
    against the account (its id, whichever of its names was typed) from this address.
    """
    async with unit_of_work(database) as uow:
        user = await uow.users.by_login(login)
    usable = user is not None and user.is_active
    account = str(user.id) if user is not None else f"login:{login.strip().lower()}"
    stored_hash = user.password_hash if usable and user else None
    verification = await _throttled_verify(
        hasher, throttle, password, stored_hash, account=account, ip=ip, event="login"
    )
    if user is None or not usable or not verification.ok:
        reason = "unknown-user" if user is None else "disabled" if not usable else "wrong-password"
        audit("login", outcome="failed", user_id=user.id if user else None, reason=reason)
        raise InvalidCredentials()
    if verification.new_hash is not None:
        await _store_upgraded_hash(database, user.id, verification.new_hash)
    return user


async def _throttled_verify(
    hasher: PasswordHasher,
    throttle: Throttle | None,
    password: str,
    stored_hash: str | None,
    *,
    account: str,
    ip: str,
    event: str,
) -> Verification:
    """``hasher.verify`` inside a reserved throttle attempt: a failure keeps its place, a
    success clears the account's windows, a check that never ran gives its places back."""
    if throttle is None:
        return await hasher.verify(password, stored_hash)
    try:
        attempt = await throttle.attempt(PASSWORD_SCOPE, account=account, ip=ip)
    except TooManyAttempts:
        audit(event, outcome="throttled")
        raise
    try:
        verification = await hasher.verify(password, stored_hash)
    except BaseException:
        await throttle.abandoned(attempt)
        raise
    if verification.ok and stored_hash is not None:
        await throttle.succeeded(attempt)
    return verification


async def _store_upgraded_hash(database: Database, user_id: uuid.UUID, new_hash: str) -> None:
    async with unit_of_work(database, write=True) as uow:
        user = await uow.users.by_id(user_id)
        if user is not None:
            user.password_hash = new_hash
            await uow.commit()
    await database.changed()


async def _mint(
    tokens: TokenSettings,
    user: User,
    family: RefreshFamily,
    *,
    fresh: bool,
    hooks: AuthHooks,
    now: int,
) -> TokenPair:
    """The pair for ``family``'s current refresh token (re-signed identically if re-issued)."""
    session_claims: dict[str, object] = {"sid": str(family.id), "ver": user.token_version}
    if family.csrf is not None:
        session_claims["csrf"] = family.csrf
    extra = await hooks.additional_claims(user) if hooks.additional_claims else {}
    access = encode_token(
        tokens,
        subject=str(user.id),
        token_type="access",
        fresh=fresh,
        roles=user.roles,
        extra_claims={**extra, **session_claims},
        now=now,
    )
    refresh_expires = min(family.current_issued_at + tokens.refresh_ttl, _epoch(family.expires_at))
    refresh = encode_token(
        tokens,
        subject=str(user.id),
        token_type="refresh",
        extra_claims=session_claims,
        now=family.current_issued_at,
        jti=family.current_jti,
        expires_at=refresh_expires,
    )
    return TokenPair(
        access_token=access.token,
        refresh_token=refresh.token,
        expires_in=tokens.access_ttl,
        refresh_expires_in=max(0, refresh_expires - now),
        user_id=user.id,
        session_id=family.id,
        csrf=family.csrf,
    )


async def start_session(
    database: Database,
    tokens: TokenSettings,
    user: User,
    *,
    policy: SessionPolicy,
    client: Client,
    hooks: AuthHooks,
    with_csrf: bool = False,
) -> TokenPair:
    """A password login: a new refresh family (device) and a fresh token pair."""
    now = _now()
    async with unit_of_work(database, write=True) as uow:
        family = await uow.families.add(
            RefreshFamily(
                id=uuid.uuid4(),
                user_pk=user.pk,
                current_jti=uuid.uuid4().hex,
                current_issued_at=_epoch(now),
                csrf=secrets.token_urlsafe(24) if with_csrf else None,
                user_agent=(client.user_agent or "")[:255] or None,
                ip=(client.ip or "")[:45] or None,
                created_at=now,
                last_used_at=now,
                expires_at=now + timedelta(seconds=policy.family_ttl),
            )
        )
        await uow.families.prune(now)
        await uow.commit()
    audit("login", user_id=user.id, session_id=family.id, cookie=with_csrf)
    return await _mint(tokens, user, family, fresh=True, hooks=hooks, now=_epoch(now))


async def refresh_session(
    database: Database,
    tokens: TokenSettings,
    raw_token: str,
    *,
    policy: SessionPolicy,
    hooks: AuthHooks,
    csrf_header: str | None = None,
    cookie: bool = False,
) -> TokenPair:
    """Rotate: spend the presented refresh token and issue the family's next pair.

    A spent token presented again is reuse and revokes the family, except within the grace
    window after its rotation, where the family's current pair is issued again (a client that
    lost the answer and retries is not logged out, and no second branch is created).
    """
    claims = decode_token(tokens, raw_token, expected_type="refresh")
    if cookie and not _csrf_matches(claims, csrf_header):
        raise CsrfFailed()
    family_id = _uuid_claim(claims.session_id)
    user_id = _uuid_claim(claims.subject)
    now = _now()
    async with unit_of_work(database, write=True) as uow:
        user = await uow.users.by_id(user_id)
        if user is None:
            raise TokenInvalid("The token's user does not exist.")
        if not user.is_active:
            raise AccountDisabled()
        if claims.version != user.token_version:
            raise TokenRevoked()
        rotated = await uow.families.rotate(
            family_id,
            presented_jti=claims.jti,
            new_jti=uuid.uuid4().hex,
            issued_at=_epoch(now),
            now=now,
        )
        family = await uow.families.by_id(family_id)
        if family is None or family.user_pk != user.pk:
            raise TokenInvalid()
        if not rotated:
            if family.revoked_at is not None:
                raise TokenRevoked()
            if family.expires_at <= now:
                raise TokenExpired("The session reached its maximum lifetime; log in again.")
            if not _is_retry(family, claims, policy, now):
                await uow.families.revoke(family.id, reason="reuse", now=now)
                await uow.commit()
                await database.changed()
                audit("refresh", outcome="reuse-detected", user_id=user.id, session_id=family.id)
                raise TokenReused()
        await uow.commit()
    audit("refresh", user_id=user.id, session_id=family.id, retry=not rotated)
    return await _mint(tokens, user, family, fresh=False, hooks=hooks, now=_epoch(now))


def _is_retry(family: RefreshFamily, claims: Claims, policy: SessionPolicy, now: datetime) -> bool:
    """The token spent by the latest rotation, shown again within the grace window."""
    return (
        family.previous_jti == claims.jti
        and family.rotated_at is not None
        and now - family.rotated_at <= timedelta(seconds=policy.reuse_grace_seconds)
    )


def _csrf_matches(claims: Claims, header: str | None) -> bool:
    expected = claims.csrf
    return bool(expected and header and secrets.compare_digest(expected, header))


def _uuid_claim(value: str | None) -> uuid.UUID:
    try:
        return uuid.UUID(value or "")
    except ValueError as exc:
        raise TokenInvalid() from exc


async def get_user(database: Database, user_id: uuid.UUID) -> User:
    async with unit_of_work(database) as uow:
        user = await uow.users.by_id(user_id)
    if user is None:
        raise NotFound()
    return user


async def verify_access(database: Database, claims: Claims) -> User:
    """The live user a verified access token speaks for, or why the token is refused.

    One query reads the user, the token's session and its revocation; its answer is kept in
    memory until the change epoch moves (see ``epoch.py``), so the common request needs no
    database round trip while a logout, a logout-everywhere, a password change, a role removal
    or a disabled account still takes effect on the very next request in every process.
    """
    cache = database.subjects
    if cache is None:
        return await _load_access_subject(database, claims)
    epoch = await cache.epoch.current()
    # Everything the answer is loaded from: a token that shares only the jti of a cached one
    # (another sub, sid or version) is another question, and gets its own load.
    subject_key = (claims.jti, claims.subject, claims.session_id, claims.version)
    cached = cache.get(subject_key, epoch)
    if isinstance(cached, User):
        return cached
    key = (subject_key, epoch)
    pending = cache.loading.get(key)
    if pending is not None:
        # Another request is loading this very token: share its answer (or its refusal).
        user: User = await asyncio.shield(pending)
        return user
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    cache.loading[key] = future
    try:
        user = await _load_access_subject(database, claims)
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved here, so an unawaited future does not warn
        raise
    else:
        future.set_result(user)
        cache.put(subject_key, epoch, user)
        return user
    finally:
        del cache.loading[key]


async def _load_access_subject(database: Database, claims: Claims) -> User:
    user_id = _uuid_claim(claims.subject)
    family_id = _uuid_claim(claims.session_id) if claims.session_id is not None else None
    async with unit_of_work(database) as uow:
        subject = await load_token_subject(
            uow.session, user_id=user_id, family_id=family_id, jti=claims.jti
        )
    user = subject.user
    if user is None:
        raise TokenInvalid("The token's user does not exist.")
    if not user.is_active:
        raise AccountDisabled()
    if claims.version != user.token_version or subject.family_revoked or subject.jti_revoked:
        raise TokenRevoked()
    return user


async def logout(database: Database, claims: Claims) -> None:
    """Revoke this access token and its session (refresh family)."""
    now = _now()
    async with unit_of_work(database, write=True) as uow:
        await uow.revocations.revoke_jti(claims.jti, datetime.fromtimestamp(claims.expires_at, UTC))
        if claims.session_id is not None:
            await uow.families.revoke(_uuid_claim(claims.session_id), reason="logout", now=now)
        await uow.revocations.prune(now)
        await uow.commit()
    await database.changed()
    audit("logout", user_id=claims.subject, session_id=claims.session_id)


async def _revoke_everything(uow: UnitOfWork, user: User, *, reason: str) -> None:
    """Every token issued so far stops working: a new version, every session revoked."""
    user.token_version += 1
    await uow.families.revoke_all(user.pk, reason=reason, now=_now())


async def logout_all(database: Database, user_id: uuid.UUID) -> None:
    async with unit_of_work(database, write=True) as uow:
        user = await uow.users.by_id(user_id)
        if user is not None:
            await _revoke_everything(uow, user, reason="logout-all")
            await uow.commit()
    await database.changed()
    audit("logout-all", user_id=user_id)


async def change_password(
    database: Database,
    hasher: PasswordHasher,
    user: User,
    *,
    current_password: str,
    new_password: str,
    keep_session: uuid.UUID | None,
    throttle: Throttle | None = None,
    ip: str = "unknown",
) -> None:
    """Check the current password, store the new hash, revoke every other session."""
    problem = password_problem(new_password, username=user.username, email=user.email)
    if problem is not None:
        raise ValidationFailed([{"loc": ["body", "new_password"], "msg": problem}], detail=problem)
    verification = await _throttled_verify(
        hasher,
        throttle,
        current_password,
        user.password_hash,
        account=str(user.id),
        ip=ip,
        event="password-change",
    )
    if not verification.ok:
        audit("password-change", outcome="failed", user_id=user.id, reason="wrong-password")
        raise InvalidCredentials("The current password is wrong.")
    new_hash = await hasher.hash(new_password)
    async with unit_of_work(database, write=True) as uow:
        stored = await uow.users.by_id(user.id)
        if stored is None:
            raise TokenInvalid("The token's user does not exist.")
        stored.password_hash = new_hash
        await uow.families.revoke_all(
            stored.pk, reason="password-change", now=_now(), keep=keep_session
        )
        await uow.commit()
    await database.changed()
    audit("password-change", user_id=user.id, kept_session=keep_session)


async def update_profile(
    database: Database,
    user_id: uuid.UUID,
    *,
    name: str | None,
    email: str | None,
    clear_name: bool = False,
) -> User:
    async with unit_of_work(database, write=True) as uow:
        user = await uow.users.by_id(user_id)
        if user is None:
            raise TokenInvalid("The token's user does not exist.")
        if name is not None or clear_name:
            user.name = name
        if email is not None:
            user.email = email.lower()
        try:
            await uow.users.save()
        except DuplicateUser as exc:
            raise UserExists("This email is already registered.", field="email") from exc
        await uow.commit()
    await database.changed()
    return user


async def list_sessions(database: Database, user: User) -> Sequence[RefreshFamily]:
    async with unit_of_work(database) as uow:
        return await uow.families.active_for_user(user.pk, _now())


async def revoke_session(database: Database, user: User, session_id: uuid.UUID) -> None:
    async with unit_of_work(database, write=True) as uow:
        family = await uow.families.by_id(session_id)
        if family is None or family.user_pk != user.pk or family.revoked_at is not None:
            raise NotFound("No such session.")
        await uow.families.revoke(session_id, reason="revoked-by-user", now=_now())
        await uow.commit()
    await database.changed()
    audit("session-revoked", user_id=user.id, session_id=session_id)


async def list_users(database: Database, *, limit: int, after: uuid.UUID | None) -> Sequence[User]:
    async with unit_of_work(database) as uow:
        return await uow.users.page(limit=limit, after=after)


async def set_roles(database: Database, login: str, roles: Sequence[str]) -> User:
    """Replace the roles; removing any revokes the user's earlier tokens (they carry roles)."""
    async with unit_of_work(database, write=True) as uow:
        user = await _user_by_login(uow, login)
        new_roles = sorted(set(roles))
        removed = sorted(set(user.roles) - set(new_roles))
        if removed:
            await _revoke_everything(uow, user, reason="role-removed")
        previous, user.roles = user.roles, new_roles
        await uow.commit()
    await database.changed()
    audit("role-change", user_id=user.id, roles=new_roles, previous=previous, removed=removed)
    return user


async def set_active(database: Database, login: str, *, active: bool) -> User:
    async with unit_of_work(database, write=True) as uow:
        user = await _user_by_login(uow, login)
        if user.is_active and not active:
            await _revoke_everything(uow, user, reason="disabled")
        user.is_active = active
        await uow.commit()
    await database.changed()
    audit("user-enabled" if active else "user-disabled", user_id=user.id)
    return user


async def _user_by_login(uow: UnitOfWork, login: str) -> User:
    user = await uow.users.by_login(login)
    if user is None:
        raise NotFound(f"No user {login!r}.")
    return user
