"""Login sessions as the service keeps them: a refresh family per login, and its token pair.

"Session" here is the refresh family (one per login, the ``sid`` claim, a row of
``refresh_families``); the browser's cookies that carry its tokens are the web layer's business.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from service.accounts.hooks import AuthHooks
from service.core.errors import TokenInvalid
from service.core.tokens import Claims, TokenSettings, encode_token
from service.store.models import RefreshFamily, User


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
class ClientInfo:
    """Who is asking: recorded on the session (device) list; the address also keys the
    throttle."""

    user_agent: str | None = None
    ip: str | None = None

    @property
    def address(self) -> str:
        return self.ip or "unknown"


def utc_now() -> datetime:
    return datetime.now(UTC)


def unix_seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def new_family(
    user: User,
    *,
    client: ClientInfo,
    policy: SessionPolicy,
    with_csrf: bool,
    now: datetime,
    amr: Sequence[str] = ("pwd",),
) -> RefreshFamily:
    return RefreshFamily(
        amr=list(amr),
        id=uuid.uuid4(),
        user_pk=user.pk,
        current_jti=uuid.uuid4().hex,
        current_issued_at=unix_seconds(now),
        csrf=secrets.token_urlsafe(24) if with_csrf else None,
        user_agent=(client.user_agent or "")[:255] or None,
        ip=(client.ip or "")[:45] or None,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(seconds=policy.family_ttl),
    )


async def mint_pair(
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
    if family.amr:
        # RFC 8176: how the session's login was authenticated, on every token of the family.
        session_claims["amr"] = list(family.amr)
    if family.csrf is not None:
        session_claims["csrf"] = family.csrf
    extra = await hooks.additional_claims(user) if hooks.additional_claims else {}
    access = encode_token(
        tokens,
        subject=str(user.id),
        token_type="access",
        fresh=fresh,
        roles=user.roles,
        # ``username`` lets a resource server (no database) name the user of a token.
        extra_claims={**extra, "username": user.username, **session_claims},
        now=now,
    )
    refresh_expires = min(
        family.current_issued_at + tokens.refresh_ttl, unix_seconds(family.expires_at)
    )
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


def is_retry(family: RefreshFamily, claims: Claims, policy: SessionPolicy, now: datetime) -> bool:
    """The token spent by the latest rotation, shown again within the grace window."""
    return (
        family.previous_jti == claims.jti
        and family.rotated_at is not None
        and now - family.rotated_at <= timedelta(seconds=policy.reuse_grace_seconds)
    )


def uuid_claim(value: str | None) -> uuid.UUID:
    try:
        return uuid.UUID(value or "")
    except ValueError as exc:
        raise TokenInvalid() from exc
