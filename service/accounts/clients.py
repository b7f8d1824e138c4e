"""Machine clients (OAuth2 client credentials, RFC 6749 §4.4), introspection (RFC 7662) and
revocation (RFC 7009). No HTTP: callers pass plain values and get records or APIErrors.

A client secret is ``secrets.token_urlsafe(32)``: 256 random bits, beyond any guessing, so it
needs no slow password hash. Only its SHA-256 is kept, compared in constant time; an unknown
client is compared against a dummy hash, so it costs what a wrong secret costs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from service.core.audit import audit
from service.core.errors import (
    APIError,
    ClientExists,
    ErrorCode,
    InvalidClient,
    NotFound,
    OAuthError,
    TokenInvalid,
    TokenRevoked,
    TooManyAttempts,
    ValidationFailed,
    WrongTokenType,
)
from service.core.tokens import Claims, TokenType, encode_token
from service.store.models import Client
from service.store.repository import DuplicateClient, load_client_subject
from service.store.unit_of_work import unit_of_work

if TYPE_CHECKING:
    from service.accounts.accounts import Accounts
    from service.accounts.sessions import ClientInfo

# Throttle scopes: client-authentication failures from one address, and for one client from one
# address (like the password scope's account + address).
CLIENT_SCOPE = "client"
CLIENT_ID_SCOPE = "client-id"
CLIENT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{3,32}$")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN_PATTERN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,64}$")
MAX_CLIENT_ID_LENGTH = 64
MAX_SCOPES = 32
INACTIVE: dict[str, Any] = {"active": False}


def new_client_id() -> str:
    return secrets.token_urlsafe(16)


def new_client_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The kept form of a client secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Whether ``secret`` hashes to ``stored_hash``, compared in constant time."""
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode())


# What an unknown client's secret is compared with: no secret hashes to it (it is no hash of a
# secret anyone holds), and comparing with it costs what comparing with a real one costs.
DUMMY_SECRET_HASH = hash_secret(new_client_secret())


def scope_problem(scope: str) -> str | None:
    """Why ``scope`` cannot name a client's scope (RFC 6749 §3.3 scope-token), if it cannot."""
    if SCOPE_TOKEN_PATTERN.fullmatch(scope) is None:
        return (
            f'scope {scope!r} must be 1 to 64 printable ASCII characters, without spaces, " or \\'
        )
    return None


@dataclass(frozen=True)
class ClientRecord:
    """A machine client as the use cases hand it out (never the ORM row, never its secret)."""

    client_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    secret_rotated_at: datetime | None = None

    @classmethod
    def of(cls, client: Client) -> ClientRecord:
        return cls(
            client_id=client.client_id,
            name=client.name,
            scopes=tuple(client.scopes),
            created_at=client.created_at,
            secret_rotated_at=client.secret_rotated_at,
        )


@dataclass(frozen=True)
class ClientCredentials:
    """A client with its secret in clear: what ``create`` and ``rotate_secret`` show once."""

    client: ClientRecord
    client_secret: str


@dataclass(frozen=True)
class ClientToken:
    """The client credentials grant's answer (RFC 6749 §4.4.3): no refresh token."""

    access_token: str
    expires_in: int
    scope: str
    jti: str
    token_type: str = "Bearer"


K = TypeVar("K")
V = TypeVar("V")


@dataclass
class _Entry(Generic[V]):
    epoch: int
    loaded_at: float
    value: V


class EpochCache(Generic[K, V]):
    """Values kept while the change epoch has not moved (and for ``ttl`` seconds at most), like
    the subject cache (``service/accounts/subjects.py``) is for users."""

    def __init__(self, *, max_entries: int = 10_000, ttl: float = 60.0) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()

    async def get_or_load(self, key: K, epoch: int, load: Callable[[], Awaitable[V]]) -> V:
        entry = self._entries.get(key)
        if entry is not None:
            if entry.epoch == epoch and time.monotonic() - entry.loaded_at <= self.ttl:
                self._entries.move_to_end(key)
                return entry.value
            del self._entries[key]
        value = await load()
        self._entries[key] = _Entry(epoch, time.monotonic(), value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)


class MachineClients:
    """The use cases of machine clients; one per ``Accounts``."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        # (jti, client_id) -> the live client: a known client token costs no database round trip.
        self.live: EpochCache[tuple[str, str], ClientRecord] = EpochCache()

    # --- administration (the CLI) -------------------------------------------------------------

    async def create(self, name: str, scopes: Sequence[str] = ()) -> ClientCredentials:
        _check_name(name)
        _check_scopes(scopes)
        secret = new_client_secret()
        async with unit_of_work(self.accounts.database, write=True) as uow:
            if await uow.clients.by_name(name) is not None:
                raise ClientExists(f"A client named {name!r} exists.")
            try:
                client = await uow.clients.add(
                    client_id=new_client_id(),
                    name=name,
                    secret_hash=hash_secret(secret),
                    scopes=scopes,
                )
            except DuplicateClient:
                raise ClientExists(f"A client named {name!r} exists.") from None
            await uow.commit()
            record = ClientRecord.of(client)
        audit("client-created", client_id=record.client_id, scopes=list(record.scopes))
        return ClientCredentials(record, secret)

    async def list_clients(self) -> list[ClientRecord]:
        async with unit_of_work(self.accounts.database) as uow:
            return [ClientRecord.of(client) for client in await uow.clients.all()]

    async def rotate_secret(self, name: str) -> ClientCredentials:
        """A new secret; the old one stops authenticating at once (tokens already issued live
        on until they expire, or until the client is deleted)."""
        secret = new_client_secret()
        async with unit_of_work(self.accounts.database, write=True) as uow:
            client = await _client_by_name(uow.clients.by_name, name)
            client.secret_hash = hash_secret(secret)
            client.secret_rotated_at = datetime.now(UTC)
            await uow.commit()
            record = ClientRecord.of(client)
        await self.accounts.changed()
        audit("client-secret-rotated", client_id=record.client_id)
        return ClientCredentials(record, secret)

    async def delete(self, name: str) -> ClientRecord:
        """Delete the client: its tokens stop working at once, here and in every process.

        Resource servers are told inside the deletion's transaction, before its commit (as
        every revocation is, ``Accounts.publish_revocations``): when Redis cannot be reached
        the client is still there (RedisUnavailable, and the same command again works), never
        deleted here while they go on accepting its tokens."""
        async with unit_of_work(self.accounts.database, write=True) as uow:
            client = await _client_by_name(uow.clients.by_name, name)
            record = ClientRecord.of(client)
            await self.accounts.publish_revocations(clients=[record.client_id])
            await uow.clients.delete(client)
            await uow.commit()
        await self.accounts.changed()
        audit("client-deleted", client_id=record.client_id)
        return record

    # --- the client credentials grant ---------------------------------------------------------

    async def authenticate(
        self, client_id: str | None, client_secret: str | None, *, client: ClientInfo
    ) -> ClientRecord:
        """The client these credentials name, or InvalidClient (TooManyAttempts when
        throttled). Every failure, unknown client or wrong secret, is the same error at the
        same cost.

        Only failures take a place in the throttle's windows, after the check: unlike a
        password, a secret of 256 random bits cannot be guessed, however many guesses run at
        once, so the throttle is there to stop floods of wrong credentials, not to ration right
        ones. Reserving places before the check (as passwords do) refused correct credentials
        with 429 as soon as more requests were in flight from one address than its window
        holds, and cost every token several round trips to Redis; a client whose id an
        attacker floods with wrong secrets from elsewhere keeps working."""
        if not client_id or not client_secret:
            audit("client-auth", outcome="failed", reason="no-credentials")
            raise InvalidClient("Client authentication is required.")
        record = await self._check_secret(client_id, client_secret)
        if record is not None:
            return record
        throttle = self.accounts.throttle
        if throttle is not None:
            per_client = f"{client_id[:MAX_CLIENT_ID_LENGTH]}@{client.address}"
            try:
                # A failure keeps the places it takes; a full window refuses it with 429.
                await throttle.attempt(CLIENT_SCOPE, account=None, ip=client.address)
                await throttle.attempt(CLIENT_ID_SCOPE, account=None, ip=per_client)
            except TooManyAttempts:
                audit("client-auth", outcome="throttled", client_id=client_id[:64])
                raise
        audit("client-auth", outcome="failed", client_id=client_id[:64])
        raise InvalidClient()

    async def _check_secret(self, client_id: str, client_secret: str) -> ClientRecord | None:
        stored: Client | None = None
        if len(client_id) <= MAX_CLIENT_ID_LENGTH:
            async with unit_of_work(self.accounts.database) as uow:
                stored = await uow.clients.by_client_id(client_id)
        # Hashed and compared whether or not the client exists: the same work either way.
        matches = secret_matches(
            client_secret, stored.secret_hash if stored is not None else DUMMY_SECRET_HASH
        )
        if stored is None or not matches:
            return None
        return ClientRecord.of(stored)

    async def issue_token(self, client: ClientRecord, requested_scope: str | None) -> ClientToken:
        """An access token for ``client`` with the requested scope (all of the client's when
        none is asked for); a scope the client does not have is ``invalid_scope``."""
        scopes = granted_scopes(client, requested_scope)
        now = int(time.time())
        scope = " ".join(scopes)
        issued = encode_token(
            self.accounts.tokens,
            subject=client.client_id,
            token_type="access",
            now=now,
            extra_claims={"client_id": client.client_id, "scope": scope},
        )
        audit("client-token", client_id=client.client_id, scope=scope)
        return ClientToken(
            access_token=issued.token,
            expires_in=issued.expires_at - now,
            scope=scope,
            jti=issued.jti,
        )

    # --- guarded requests ---------------------------------------------------------------------

    async def live_client(self, claims: Claims) -> ClientRecord:
        """The live client verified access-token claims speak for; else the APIError that
        refuses the token (deleted client or revoked token: TOKEN_REVOKED). Kept in memory
        until the change epoch moves, like the subject cache keeps users."""
        client_id = claims.client_id
        if client_id is None:
            raise WrongTokenType("This needs a machine client's access token.")
        if claims.subject != client_id:
            raise TokenInvalid("The token's subject is not its client.")
        hooks = self.accounts.hooks
        if hooks.revocation_check is not None and await hooks.revocation_check(claims):
            raise TokenRevoked()
        epoch = self.accounts.epoch
        if self.accounts.subjects is None or epoch is None:
            return await self._load_live_client(claims, client_id)
        return await self.live.get_or_load(
            (claims.jti, client_id),
            await epoch.current(),
            lambda: self._load_live_client(claims, client_id),
        )

    async def _load_live_client(self, claims: Claims, client_id: str) -> ClientRecord:
        async with unit_of_work(self.accounts.database) as uow:
            subject = await load_client_subject(uow.session, client_id=client_id, jti=claims.jti)
        if subject.client is None:
            raise TokenRevoked("The token's client was deleted.")
        if subject.jti_revoked:
            raise TokenRevoked()
        return ClientRecord.of(subject.client)

    # --- introspection and revocation ---------------------------------------------------------

    async def introspect(
        self, raw_token: str, token_type_hint: str | None = None
    ) -> dict[str, Any]:
        """RFC 7662: ``{"active": false}`` for anything not currently valid, else its claims."""
        try:
            claims = self._verified(raw_token, token_type_hint)
        except APIError:
            return dict(INACTIVE)
        try:
            if claims.token_type == "refresh":
                username = await self._live_refresh_username(claims)
                return _active(claims, username=username, sid=claims.session_id)
            if claims.client_id is not None:
                await self.live_client(claims)
                return _active(claims, client_id=claims.client_id, scope=claims.raw.get("scope"))
            user = await self.accounts.user_for(claims)
        except APIError:
            return dict(INACTIVE)
        return _active(
            claims, username=user.username, sid=claims.session_id, roles=list(claims.roles)
        )

    async def _live_refresh_username(self, claims: Claims) -> str:
        """The username of a refresh token that is its session's current one, in a session
        neither revoked nor expired, of an active user whose tokens were not all revoked."""
        user_id, family_id = _uuid(claims.subject), _uuid(claims.session_id)
        async with unit_of_work(self.accounts.database) as uow:
            user = await uow.users.by_id(user_id)
            family = await uow.families.by_id(family_id)
        if (
            user is None
            or family is None
            or not user.is_active
            or claims.version != user.token_version
            or family.user_pk != user.pk
            or family.current_jti != claims.jti
            or family.revoked_at is not None
            or family.expires_at <= datetime.now(UTC)
        ):
            raise TokenRevoked()
        return user.username

    async def revoke(self, raw_token: str, token_type_hint: str | None = None) -> None:
        """RFC 7009: a refresh token ends its session, an access token (a user's or a
        client's) is revoked until it expires. Anything else: nothing happens."""
        try:
            claims = self._verified(raw_token, token_type_hint)
        except APIError:
            audit("token-revoked", outcome="ignored", reason="invalid-token")
            return
        session_id = claims.session_id if claims.token_type == "refresh" else None
        ended_session = False
        now = datetime.now(UTC)
        async with unit_of_work(self.accounts.database, write=True) as uow:
            if session_id is not None:
                family = await uow.families.by_id(_uuid(session_id))
                user = await uow.users.by_id(_uuid(claims.subject))
                if family is not None and user is not None and family.user_pk == user.pk:
                    await uow.families.revoke(family.id, reason="revoked", now=now)
                    ended_session = True
            await uow.revocations.revoke_jti(
                claims.jti, datetime.fromtimestamp(claims.expires_at, UTC)
            )
            await uow.revocations.prune(now)
            await self.accounts.publish_revocations(
                tokens=[(claims.jti, claims.expires_at)],
                sessions=[session_id] if ended_session and session_id is not None else [],
            )
            await uow.commit()
        await self.accounts.changed()
        audit(
            "token-revoked",
            user_id=None if claims.client_id is not None else claims.subject,
            client_id=claims.client_id,
            token_type=claims.token_type,
            session_id=session_id if ended_session else None,
        )

    def _verified(self, raw_token: str, token_type_hint: str | None) -> Claims:
        """The claims of a token of either type, verified; the hint says which to try first."""
        order: tuple[TokenType, TokenType] = (
            ("refresh", "access") if token_type_hint == "refresh_token" else ("access", "refresh")
        )
        try:
            return self.accounts.decode(raw_token, expected_type=order[0])
        except WrongTokenType:
            return self.accounts.decode(raw_token, expected_type=order[1])


def granted_scopes(client: ClientRecord, requested_scope: str | None) -> tuple[str, ...]:
    """The scopes a token may carry: those asked for (RFC 6749 §3.3, space-separated), which
    must all be the client's; none asked for (or an empty value) means all of them."""
    if not requested_scope:
        return client.scopes
    requested = set(requested_scope.split(" ")) - {""}
    unknown = requested - set(client.scopes)
    if unknown:
        raise OAuthError(
            "invalid_scope",
            ErrorCode.INVALID_SCOPE,
            f"The client may not ask for: {' '.join(sorted(unknown))}.",
        )
    return tuple(sorted(requested))


def _active(claims: Claims, **extra: object) -> dict[str, Any]:
    raw = claims.raw
    answer: dict[str, Any] = {
        "active": True,
        "sub": claims.subject,
        "token_type": f"{claims.token_type}_token",
        "exp": claims.expires_at,
        "iat": claims.issued_at,
        "jti": claims.jti,
        "iss": raw.get("iss"),
        "aud": raw.get("aud"),
    }
    answer.update({name: value for name, value in extra.items() if value is not None})
    return answer


def _uuid(value: str | None) -> uuid.UUID:
    try:
        return uuid.UUID(value or "")
    except ValueError:
        raise TokenInvalid() from None


def _check_name(name: str) -> None:
    if CLIENT_NAME_PATTERN.fullmatch(name) is None:
        message = "client name must be 3 to 32 letters, digits, '_', '.' or '-'"
        raise ValidationFailed([{"loc": ["name"], "msg": message}], detail=message)


def _check_scopes(scopes: Sequence[str]) -> None:
    if len(set(scopes)) > MAX_SCOPES:
        message = f"a client has at most {MAX_SCOPES} scopes"
        raise ValidationFailed([{"loc": ["scope"], "msg": message}], detail=message)
    for scope in scopes:
        problem = scope_problem(scope)
        if problem is not None:
            raise ValidationFailed([{"loc": ["scope"], "msg": problem}], detail=problem)


async def _client_by_name(find: Callable[[str], Awaitable[Client | None]], name: str) -> Client:
    client = await find(name)
    if client is None:
        raise NotFound(f"No client {name!r}.")
    return client
