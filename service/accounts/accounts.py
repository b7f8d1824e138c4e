"""The use cases: one ``Accounts`` object per app, and every route calls one of its methods.

Nothing here knows HTTP: callers pass plain values (and a ``ClientInfo``) and get models, token
pairs or APIError exceptions. Each method owns its transactions (``unit_of_work``) and announces
what it changed (``changed()``: the change epoch moves, every process's subject cache reloads).
Throttling happens inside: a caller cannot forget it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from service.accounts.clients import MachineClients
from service.accounts.email_flows import EmailFlows
from service.accounts.hooks import AuthHooks
from service.accounts.mail import Mailer
from service.accounts.mfa import MfaFlows
from service.accounts.passkeys import Passkeys
from service.accounts.sessions import (
    ClientInfo,
    SessionPolicy,
    TokenPair,
    is_retry,
    mint_pair,
    new_family,
    unix_seconds,
    utc_now,
    uuid_claim,
)
from service.accounts.subjects import SubjectCache
from service.accounts.throttle import (
    PASSWORD_SCOPE,
    REFRESH_SCOPE,
    Throttle,
    ThrottleLimits,
)
from service.core.audit import audit
from service.core.config import ConfigError, Settings
from service.core.errors import (
    AccountDisabled,
    APIError,
    CsrfFailed,
    EmailNotVerified,
    HashingBusy,
    InvalidCredentials,
    NotFound,
    ServiceUnavailable,
    TokenExpired,
    TokenInvalid,
    TokenReused,
    TokenRevoked,
    TooManyAttempts,
    UserExists,
    ValidationFailed,
)
from service.core.keys import token_settings
from service.core.password_policy import password_problem
from service.core.passwords import PasswordHasher, Verification
from service.core.tokens import Claims, TokenSettings, TokenType
from service.core.verifier import TokenVerifier
from service.store.db import UNAVAILABLE_ERRORS, Database
from service.store.epoch import Epoch, RedisEpoch, open_epoch
from service.store.feed import RevocationFeed
from service.store.models import RefreshFamily, User
from service.store.repository import DuplicateUser, load_token_subject
from service.store.unit_of_work import UnitOfWork, unit_of_work

logger = logging.getLogger("service")


class Accounts:
    def __init__(
        self,
        *,
        database: Database,
        hasher: PasswordHasher,
        tokens: TokenSettings,
        policy: SessionPolicy | None = None,
        hooks: AuthHooks | None = None,
        throttle: Throttle | None = None,
        epoch: Epoch | None = None,
        feed: RevocationFeed | None = None,
        mailer: Mailer | None = None,
    ) -> None:
        self.database = database
        self.hasher = hasher
        self.tokens = tokens
        self.policy = policy or SessionPolicy()
        self.hooks = hooks or AuthHooks()
        self.throttle = throttle
        self.epoch = epoch
        self.feed = feed
        self.mailer = mailer if mailer is not None else Mailer(database.settings, database)
        self.verifier = TokenVerifier(tokens)
        # Without a shared epoch (PostgreSQL, no Redis) nothing can tell this process of another's
        # change, so nothing is cached: every request asks the database.
        self.subjects = SubjectCache(epoch) if epoch is not None else None
        self.clients = MachineClients(self)
        # Verification and password reset: the mailed links (service/accounts/email_flows.py).
        self.email = EmailFlows(self)
        # The second factor: TOTP, recovery codes, the login step (mfa.py), passkeys.
        self.mfa = MfaFlows(self)
        self.passkeys = Passkeys(self)

    @classmethod
    def from_settings(cls, settings: Settings, hooks: AuthHooks | None = None) -> Accounts:
        database = Database(settings)
        tokens = token_settings(settings)
        feed = (
            RevocationFeed(
                settings.redis_url,
                settings.redis_prefix,
                fact_ttl=tokens.access_ttl + tokens.leeway,
            )
            if settings.redis_url
            else None
        )
        return cls(
            database=database,
            epoch=open_epoch(database),
            hasher=PasswordHasher(settings),
            tokens=tokens,
            feed=feed,
            mailer=Mailer.from_settings(settings, database),
            policy=SessionPolicy(
                reuse_grace_seconds=settings.refresh_reuse_grace_seconds,
                family_ttl=settings.refresh_family_ttl,
            ),
            hooks=hooks,
            throttle=build_throttle(settings),
        )

    async def close(self) -> None:
        await self.mailer.close()
        await self.database.dispose()
        if self.epoch is not None:
            await self.epoch.close()
        self.hasher.close()
        if self.throttle is not None:
            await self.throttle.close()
        if self.feed is not None:
            await self.feed.close()

    async def changed(self) -> None:
        """Announce a committed change to users or token validity: every cache reloads."""
        if self.epoch is not None:
            await self.epoch.bump()

    async def publish_revocations(
        self,
        *,
        tokens: Sequence[tuple[str, int]] = (),
        sessions: Sequence[str] = (),
        versions: Sequence[tuple[str, int]] = (),
        clients: Sequence[str] = (),
    ) -> None:
        """Tell resource servers (through the shared Redis, ``service/store/feed.py``) what was
        just revoked: access tokens as ``(jti, exp)``, sessions by ``sid``, users' lowest valid
        token versions as ``(sub, ver)``, machine clients by ``client_id``; without Redis there
        is no one to tell.

        Call it inside the change's transaction, just before its commit: if Redis cannot be
        told (RedisUnavailable, 503), nothing is committed and the same request can be made
        again. Told after the commit, a failure left the change made here and never told
        downstream (a retry found it done), so resource servers went on accepting the revoked
        tokens until they expired. Told first and then not committed, resource servers refuse
        a little more than the service does, never less."""
        if self.feed is not None:
            await self.feed.publish(
                tokens=tokens, sessions=sessions, versions=versions, clients=clients
            )

    async def readiness(self) -> dict[str, Literal["ok"]]:
        """What answers: the database (and Redis, when configured); else ServiceUnavailable."""
        try:
            await self.database.ping()
        except UNAVAILABLE_ERRORS as exc:
            logger.warning("readiness check failed: %s", exc.__class__.__name__)
            raise ServiceUnavailable("The database is not reachable.") from None
        checks: dict[str, Literal["ok"]] = {"database": "ok"}
        if isinstance(self.epoch, RedisEpoch):
            await self.epoch.ping()  # RedisUnavailable: 503
            checks["redis"] = "ok"
        return checks

    # --- signing up and logging in ------------------------------------------------------------

    async def register(
        self,
        *,
        username: str,
        email: str,
        password: str,
        name: str | None = None,
        roles: Sequence[str] = (),
    ) -> User:
        # A name already taken is refused before the hash is paid for (hashing is the scarce
        # resource); the unique index still decides between concurrent signups of one new name.
        async with unit_of_work(self.database) as uow:
            taken = await uow.users.taken_field(username=username, email=email)
        if taken is not None:
            raise _user_exists(taken)
        password_hash = await self.hasher.hash(password)
        async with unit_of_work(self.database, write=True) as uow:
            try:
                user = await uow.users.add(
                    username=username,
                    email=email,
                    password_hash=password_hash,
                    name=name,
                    roles=roles,
                )
            except DuplicateUser as exc:
                raise _user_exists(exc.field) from exc
            # The verification link is stored with the user: both or neither.
            mailed = await self.email.queue_verification(uow, user)
            await uow.commit()
        if mailed:
            self.email.sent()
        audit("signup", user_id=user.id)
        return user

    async def sign_up(
        self,
        *,
        username: str,
        email: str,
        password: str,
        name: str | None,
        client: ClientInfo,
    ) -> tuple[User, TokenPair | None]:
        """A new account, signed in at once with a browser session (the signup page); no
        session (None) while ``AUTH_REQUIRE_VERIFIED_EMAIL`` wants the address verified."""
        user = await self.register(username=username, email=email, password=password, name=name)
        if self.require_verified_email and not user.email_verified:
            return user, None
        return user, await self.start_session(user, client=client, with_csrf=True)

    @property
    def require_verified_email(self) -> bool:
        return self.database.settings.require_verified_email

    async def verify_credentials(self, login: str, password: str, *, client: ClientInfo) -> User:
        """The user for these credentials, or InvalidCredentials (TooManyAttempts when throttled).

        Unknown users and disabled accounts cost a hash verification too, and every failure
        gives the same error, so neither the answer nor its timing tells whether an account
        exists. The attempt takes its place in the throttle's windows before the password is
        checked, counted against the account (its id, whichever of its names was typed) from
        this address. With ``AUTH_REQUIRE_VERIFIED_EMAIL``, an unverified address is
        EmailNotVerified, told only to whoever typed the right password.
        """
        async with unit_of_work(self.database) as uow:
            user = await uow.users.by_login(login)
        usable = user is not None and user.is_active
        account = str(user.id) if user is not None else f"login:{login.strip().lower()}"
        stored_hash = user.password_hash if usable and user else None
        verification = await self._verify_password(
            password, stored_hash, account=account, client=client, event="login"
        )
        if user is None or not usable or not verification.ok:
            reason = (
                "unknown-user" if user is None else "disabled" if not usable else "wrong-password"
            )
            audit("login", outcome="failed", user_id=user.id if user else None, reason=reason)
            raise InvalidCredentials()
        if verification.new_hash is not None:
            await self._store_upgraded_hash(user.id, verification.new_hash)
        if self.require_verified_email and not user.email_verified:
            audit("login", outcome="refused", user_id=user.id, reason="email-not-verified")
            raise EmailNotVerified()
        return user

    async def login(
        self, login: str, password: str, *, client: ClientInfo, with_csrf: bool = False
    ) -> tuple[User, TokenPair]:
        """A password login: the credentials checked under the throttle, then a new session.

        Every way in (/login, /token, /session, the login page) comes here: one set of counters.
        A user with a second factor gets MfaRequired instead, and goes on at ``mfa``.
        """
        user = await self.verify_credentials(login, password, client=client)
        await self.mfa.challenge_login(user, client=client, with_csrf=with_csrf)
        return user, await self.start_session(user, client=client, with_csrf=with_csrf)

    async def start_session(
        self,
        user: User,
        *,
        client: ClientInfo,
        with_csrf: bool = False,
        amr: Sequence[str] = ("pwd",),
    ) -> TokenPair:
        """A new refresh family (device) for ``user`` and a fresh token pair; ``with_csrf`` for a
        browser whose tokens travel in cookies; ``amr`` (RFC 8176) says how the login was
        authenticated."""
        now = utc_now()
        async with unit_of_work(self.database, write=True) as uow:
            family = await uow.families.add(
                new_family(
                    user,
                    client=client,
                    policy=self.policy,
                    with_csrf=with_csrf,
                    now=now,
                    amr=amr,
                )
            )
            await uow.families.prune(now)
            await uow.commit()
        audit("login", user_id=user.id, session_id=family.id, cookie=with_csrf)
        return await self._mint(user, family, fresh=True, now=unix_seconds(now))

    async def refresh(
        self,
        raw_token: str,
        *,
        client: ClientInfo,
        csrf_header: str | None = None,
        cookie: bool = False,
    ) -> TokenPair:
        """Rotate a refresh token. Refused tokens from one address are throttled: each attempt
        takes its place before the token is checked, and a success gives it back."""
        if self.throttle is None:
            return await self._refresh(raw_token, csrf_header=csrf_header, cookie=cookie)
        try:
            async with self.throttle.attempting(
                REFRESH_SCOPE, account=None, ip=client.address, counts=_refused_token
            ) as outcome:
                pair = await self._refresh(raw_token, csrf_header=csrf_header, cookie=cookie)
                outcome.succeeded()
        except TooManyAttempts:
            audit("refresh", outcome="throttled")
            raise
        return pair

    async def _refresh(self, raw_token: str, *, csrf_header: str | None, cookie: bool) -> TokenPair:
        try:
            return await self._rotate(raw_token, csrf_header=csrf_header, cookie=cookie)
        except APIError as exc:
            audit("refresh", outcome="refused", code=exc.code.value)
            raise

    async def _rotate(self, raw_token: str, *, csrf_header: str | None, cookie: bool) -> TokenPair:
        """Spend the presented refresh token and issue the family's next pair.

        A spent token presented again is reuse and revokes the family, except within the grace
        window after its rotation, where the family's current pair is issued again (a client
        that lost the answer and retries is not logged out, and no second branch is created).
        """
        claims = self.decode(raw_token, expected_type="refresh")
        if cookie and not claims.csrf_matches(csrf_header):
            raise CsrfFailed()
        family_id = uuid_claim(claims.session_id)
        user_id = uuid_claim(claims.subject)
        now = utc_now()
        async with unit_of_work(self.database, write=True) as uow:
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
                issued_at=unix_seconds(now),
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
                if not is_retry(family, claims, self.policy, now):
                    await uow.families.revoke(family.id, reason="reuse", now=now)
                    await self.publish_revocations(sessions=[str(family.id)])
                    await uow.commit()
                    await self.changed()
                    audit(
                        "refresh", outcome="reuse-detected", user_id=user.id, session_id=family.id
                    )
                    raise TokenReused()
            await uow.commit()
        audit("refresh", user_id=user.id, session_id=family.id, retry=not rotated)
        return await self._mint(user, family, fresh=False, now=unix_seconds(now))

    # --- guarded requests ---------------------------------------------------------------------

    def decode(self, token: str, *, expected_type: TokenType) -> Claims:
        """The verified claims of ``token`` (a token seen before costs no signature check)."""
        return self.verifier.decode(token, expected_type=expected_type)

    async def verify_access(self, token: str) -> Claims:
        """``decode`` for an access token, as the guards ask every authority for it."""
        return self.verifier.decode(token, expected_type="access")

    async def client_for(self, claims: Claims) -> None:
        """Refuse a machine client's token unless the client and the token are still live."""
        await self.clients.live_client(claims)

    async def user_for(self, claims: Claims) -> User:
        """The live user verified access-token claims speak for, through the app's hooks; else
        the APIError that refuses the token."""
        hooks = self.hooks
        if hooks.revocation_check is not None and await hooks.revocation_check(claims):
            raise TokenRevoked()
        user = await self._live_subject(claims)
        if hooks.user_loader is not None:
            user = await hooks.user_loader(claims, user)
        return user

    async def _live_subject(self, claims: Claims) -> User:
        """One query reads the user, the token's session and its revocation; its answer is kept
        in memory until the change epoch moves, so the common request needs no database round
        trip while a logout, a logout-everywhere, a password change, a role removal or a
        disabled account still takes effect on the very next request in every process."""
        if self.subjects is None:
            return await self._load_subject(claims)
        key = (claims.jti, claims.subject, claims.session_id, claims.version)
        return await self.subjects.get_or_load(key, lambda: self._load_subject(claims))

    async def _load_subject(self, claims: Claims) -> User:
        user_id = uuid_claim(claims.subject)
        family_id = uuid_claim(claims.session_id) if claims.session_id is not None else None
        async with unit_of_work(self.database) as uow:
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

    # --- logging out and sessions -------------------------------------------------------------

    async def logout(self, claims: Claims) -> None:
        """Revoke this access token and its session (refresh family)."""
        now = utc_now()
        async with unit_of_work(self.database, write=True) as uow:
            await uow.revocations.revoke_jti(
                claims.jti, datetime.fromtimestamp(claims.expires_at, UTC)
            )
            if claims.session_id is not None:
                await uow.families.revoke(uuid_claim(claims.session_id), reason="logout", now=now)
            await uow.revocations.prune(now)
            await self.publish_revocations(
                tokens=[(claims.jti, claims.expires_at)],
                sessions=[claims.session_id] if claims.session_id is not None else [],
            )
            await uow.commit()
        await self.changed()
        audit("logout", user_id=claims.subject, session_id=claims.session_id)

    async def logout_all(self, user_id: uuid.UUID) -> None:
        async with unit_of_work(self.database, write=True) as uow:
            user = await uow.users.by_id(user_id)
            if user is not None:
                await _revoke_everything(uow, user, reason="logout-all")
                await self.publish_revocations(versions=[_version_fact(user)])
                await uow.commit()
        await self.changed()
        audit("logout-all", user_id=user_id)

    async def list_sessions(self, user: User) -> Sequence[RefreshFamily]:
        async with unit_of_work(self.database) as uow:
            return await uow.families.active_for_user(user.pk, utc_now())

    async def revoke_session(self, user: User, session_id: uuid.UUID) -> None:
        async with unit_of_work(self.database, write=True) as uow:
            family = await uow.families.by_id(session_id)
            if family is None or family.user_pk != user.pk or family.revoked_at is not None:
                raise NotFound("No such session.")
            await uow.families.revoke(session_id, reason="revoked-by-user", now=utc_now())
            await self.publish_revocations(sessions=[str(session_id)])
            await uow.commit()
        await self.changed()
        audit("session-revoked", user_id=user.id, session_id=session_id)

    # --- the signed-in user -------------------------------------------------------------------

    async def change_password(
        self,
        user: User,
        *,
        current_password: str,
        new_password: str,
        keep_session: uuid.UUID | None,
        client: ClientInfo,
    ) -> None:
        """Check the current password, store the new hash, revoke every other session."""
        problem = password_problem(new_password, username=user.username, email=user.email)
        if problem is not None:
            raise ValidationFailed(
                [{"loc": ["body", "new_password"], "msg": problem}], detail=problem
            )
        verification = await self._verify_password(
            current_password,
            user.password_hash,
            account=str(user.id),
            client=client,
            event="password-change",
        )
        if not verification.ok:
            audit("password-change", outcome="failed", user_id=user.id, reason="wrong-password")
            raise InvalidCredentials("The current password is wrong.")
        new_hash = await self.hasher.hash(new_password)
        async with unit_of_work(self.database, write=True) as uow:
            stored = await uow.users.by_id(user.id)
            if stored is None:
                raise TokenInvalid("The token's user does not exist.")
            stored.password_hash = new_hash
            ended = await uow.families.revoke_all(
                stored.pk, reason="password-change", now=utc_now(), keep=keep_session
            )
            await self.publish_revocations(sessions=[str(family_id) for family_id in ended])
            await uow.commit()
        await self.changed()
        audit("password-change", user_id=user.id, kept_session=keep_session)

    async def update_profile(
        self,
        user_id: uuid.UUID,
        *,
        name: str | None,
        email: str | None,
        clear_name: bool = False,
    ) -> User:
        async with unit_of_work(self.database, write=True) as uow:
            user = await uow.users.by_id(user_id)
            if user is None:
                raise TokenInvalid("The token's user does not exist.")
            if name is not None or clear_name:
                user.name = name
            old_email = user.email
            email_changed = email is not None and email.lower() != old_email
            if email is not None and email_changed:
                # A new address is unverified, and every link sent to an earlier one dies.
                user.email = email.lower()
                user.email_verified = False
                user.email_version += 1
            try:
                await uow.users.save()
            except DuplicateUser as exc:
                raise UserExists("This email is already registered.", field="email") from exc
            mailed = email_changed and await self.email.queue_email_changed(
                uow, user, old_email=old_email
            )
            await uow.commit()
        if mailed:
            self.email.sent()
        await self.changed()
        if email_changed:
            audit("email-change", user_id=user.id)
        return user

    # --- administration (the admin API and the CLI) -------------------------------------------

    async def get_user(self, user_id: uuid.UUID) -> User:
        async with unit_of_work(self.database) as uow:
            user = await uow.users.by_id(user_id)
        if user is None:
            raise NotFound()
        return user

    async def list_users(self, *, limit: int, after: uuid.UUID | None) -> Sequence[User]:
        async with unit_of_work(self.database) as uow:
            return await uow.users.page(limit=limit, after=after)

    async def set_roles(self, login: str, roles: Sequence[str]) -> User:
        """Replace the roles; removing any revokes the user's earlier tokens (they carry roles)."""
        async with unit_of_work(self.database, write=True) as uow:
            user = await _user_by_login(uow, login)
            new_roles = sorted(set(roles))
            removed = sorted(set(user.roles) - set(new_roles))
            if removed:
                await _revoke_everything(uow, user, reason="role-removed")
            previous, user.roles = user.roles, new_roles
            if removed:
                await self.publish_revocations(versions=[_version_fact(user)])
            await uow.commit()
        await self.changed()
        audit("role-change", user_id=user.id, roles=new_roles, previous=previous, removed=removed)
        return user

    async def set_active(self, login: str, *, active: bool) -> User:
        async with unit_of_work(self.database, write=True) as uow:
            user = await _user_by_login(uow, login)
            disabling = user.is_active and not active
            if disabling:
                await _revoke_everything(uow, user, reason="disabled")
            user.is_active = active
            if disabling:
                await self.publish_revocations(versions=[_version_fact(user)])
            await uow.commit()
        await self.changed()
        audit("user-enabled" if active else "user-disabled", user_id=user.id)
        return user

    # --- helpers ------------------------------------------------------------------------------

    async def _verify_password(
        self,
        password: str,
        stored_hash: str | None,
        *,
        account: str,
        client: ClientInfo,
        event: str,
    ) -> Verification:
        """``hasher.verify`` inside a throttled attempt: a failure keeps its place, a success
        clears the account's windows, a check that never ran (HashingBusy) gives its places
        back."""
        try:
            if self.throttle is None:
                return await self.hasher.verify(password, stored_hash)
            async with self.throttle.attempting(
                PASSWORD_SCOPE, account=account, ip=client.address
            ) as outcome:
                verification = await self.hasher.verify(password, stored_hash)
                if verification.ok and stored_hash is not None:
                    outcome.succeeded()
        except TooManyAttempts:
            audit(event, outcome="throttled")
            raise
        except HashingBusy:
            audit(event, outcome="busy")
            raise
        return verification

    async def _store_upgraded_hash(self, user_id: uuid.UUID, new_hash: str) -> None:
        async with unit_of_work(self.database, write=True) as uow:
            user = await uow.users.by_id(user_id)
            if user is not None:
                user.password_hash = new_hash
                await uow.commit()
        await self.changed()

    async def _mint(self, user: User, family: RefreshFamily, *, fresh: bool, now: int) -> TokenPair:
        return await mint_pair(self.tokens, user, family, fresh=fresh, hooks=self.hooks, now=now)


def build_throttle(settings: Settings) -> Throttle | None:
    if not settings.throttle_enabled:
        return None
    try:
        limits = ThrottleLimits.parse(
            settings.throttle_account_limits,
            settings.throttle_ip_limits,
            settings.throttle_refresh_limits,
        )
    except ValueError as exc:
        raise ConfigError(f"AUTH_THROTTLE_*: {exc}") from None
    return Throttle(limits, settings.redis_url, settings.redis_prefix)


def _refused_token(error: BaseException) -> bool:
    """A refresh refused for its token (401) counts as a failed attempt; other errors do not."""
    return isinstance(error, APIError) and error.status == 401


def _user_exists(field: str | None) -> UserExists:
    detail = {
        "username": "This username is taken.",
        "email": "This email is already registered.",
    }.get(field or "")
    audit("signup", outcome="conflict", field=field)
    return UserExists(detail, field=field)


async def _revoke_everything(uow: UnitOfWork, user: User, *, reason: str) -> None:
    """Every token issued so far stops working: a new version, every session revoked."""
    user.token_version += 1
    await uow.families.revoke_all(user.pk, reason=reason, now=utc_now())


def _version_fact(user: User) -> tuple[str, int]:
    """The feed's fact for a user whose every earlier token was just revoked."""
    return str(user.id), user.token_version


async def _user_by_login(uow: UnitOfWork, login: str) -> User:
    user = await uow.users.by_login(login)
    if user is None:
        raise NotFound(f"No user {login!r}.")
    return user
