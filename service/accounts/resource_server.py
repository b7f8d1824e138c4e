"""Resource-server mode: the guards of an app that verifies the service's tokens without its
database.

Tokens verify against the service's JWK Set (``AUTH_JWKS_URL``), with ``iss`` and ``aud``
checked as the service checks them. What the signature cannot tell, whether the token was
revoked since, comes from the service's revocation feed in the shared Redis
(``service/store/feed.py``: refused on the very next request), or from its ``/introspect``
(``AUTH_INTROSPECTION_URL`` with this app's ``AUTH_CLIENT_ID`` / ``AUTH_CLIENT_SECRET``), or, with
neither, with the token's expiry. Nothing here opens a database.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from service.accounts.hooks import AuthHooks
from service.core.config import ConfigError, Settings
from service.core.errors import (
    ServiceUnavailable,
    TokenInvalid,
    TokenRevoked,
    WrongTokenType,
)
from service.core.keys import keys_from_jwks
from service.core.tokens import Claims, TokenSettings, claims_from_payload
from service.core.verifier import TokenVerifier
from service.store.feed import RevocationFeed
from service.store.models import User

logger = logging.getLogger("service")

HTTP_TIMEOUT = httpx.Timeout(3.0)


class KeysUnavailable(ServiceUnavailable):
    default_detail = "The keys that verify tokens cannot be fetched; try again shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "5"})


class IntrospectionUnavailable(ServiceUnavailable):
    default_detail = "The token service cannot be asked about this token; try again shortly."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


def _unverified_kid(token: str) -> str | None:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:  # malformed: the verifier refuses it next
        return None
    return kid if isinstance(kid, str) else None


class RemoteKeys:
    """The service's JWK Set, fetched on first use, kept ``cache_seconds``, fetched again at
    most once per ``min_refetch_seconds`` for a ``kid`` it does not hold (a key rotation).

    Each distinct set gets its own ``TokenVerifier``: a token verified under a key the service
    has since withdrawn is not remembered past the set that held it. Concurrent requests share
    one fetch.
    """

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        issuer: str,
        audience: str,
        leeway: int,
        cache_seconds: float,
        min_refetch_seconds: float,
    ) -> None:
        self.url = url
        self.http = http
        self.issuer, self.audience, self.leeway = issuer, audience, leeway
        self.cache_seconds = cache_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self.verifier: TokenVerifier | None = None
        self.kids: frozenset[str] = frozenset()
        self.fetches = 0
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._fetching: asyncio.Task[None] | None = None

    async def verifier_for(self, token: str) -> TokenVerifier:
        """The verifier to check ``token`` with: the current keys, fetched first when there are
        none yet, when they are older than ``cache_seconds``, or when the token names a ``kid``
        they lack (at most once per ``min_refetch_seconds``)."""
        now = time.monotonic()
        verifier = self.verifier
        if verifier is not None and now - self._fetched_at <= self.cache_seconds:
            if token in verifier.verified:
                return verifier  # verified under this very set: no header to read
            kid = _unverified_kid(token)
            if kid is None or kid in self.kids:
                return verifier
            if now - self._attempted_at < self.min_refetch_seconds:
                return verifier  # refused by kid below: no fetch storm from forged kids
        await self._refresh()
        if self.verifier is None:
            raise KeysUnavailable()
        kid = _unverified_kid(token)
        if kid is not None and kid not in self.kids and self._last_fetch_failed:
            # The token may be signed by a key the service published since: cannot tell now.
            raise KeysUnavailable()
        return self.verifier

    async def _refresh(self) -> None:
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
        fetching = self._fetching
        try:
            await asyncio.shield(fetching)
        finally:
            if self._fetching is fetching and fetching.done():
                self._fetching = None

    async def _fetch(self) -> None:
        self._attempted_at = time.monotonic()
        self._last_fetch_failed = True
        try:
            response = await self.http.get(self.url, headers={"Accept": "application/json"})
            response.raise_for_status()
            keys = keys_from_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("cannot fetch the JWKS from %s: %s", self.url, _describe(exc))
            return
        self.fetches += 1
        self._last_fetch_failed = False
        self._fetched_at = time.monotonic()
        kids = frozenset(key.kid for key in keys)
        logger.info("fetched the JWKS from %s: %d key(s)", self.url, len(keys))
        if not keys:
            logger.warning("the JWKS at %s holds no RS256, ES256 or EdDSA key", self.url)
            self.verifier, self.kids = None, frozenset()
            return
        if self.verifier is not None and kids == self.kids:
            return  # the same set: keep the verified tokens
        settings = TokenSettings(
            key=keys[0],
            previous_keys=keys[1:],
            issuer=self.issuer,
            audience=self.audience,
            access_ttl=0,
            refresh_ttl=0,
            leeway=self.leeway,
        )
        self.verifier, self.kids = TokenVerifier(settings), kids

    _last_fetch_failed = False


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__


@dataclass
class _Answer:
    at: float
    payload: dict[str, Any]


class Introspector:
    """Asks the service's ``/introspect`` (RFC 7662) about a token, as a machine client."""

    def __init__(
        self, url: str, http: httpx.AsyncClient, *, client_id: str, secret: str, cache: float
    ) -> None:
        self.url = url
        self.http = http
        self.auth = httpx.BasicAuth(client_id, secret)
        self.cache_seconds = cache
        self._answers: OrderedDict[str, _Answer] = OrderedDict()

    async def ask(self, token: str) -> dict[str, Any]:
        """The introspection answer (``{"active": false}`` for a token not currently valid)."""
        if self.cache_seconds > 0:
            known = self._answers.get(token)
            if known is not None and time.monotonic() - known.at <= self.cache_seconds:
                return known.payload
        try:
            response = await self.http.post(
                self.url,
                data={"token": token, "token_type_hint": "access_token"},
                auth=self.auth,
                headers={"Accept": "application/json"},
            )
            response.raise_for_status()
            payload = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("cannot introspect at %s: %s", self.url, _describe(exc))
            raise IntrospectionUnavailable() from None
        if not isinstance(payload, dict) or not isinstance(payload.get("active"), bool):
            logger.warning("the introspection answer from %s is not RFC 7662", self.url)
            raise IntrospectionUnavailable()
        if self.cache_seconds > 0 and payload["active"]:
            self._answers[token] = _Answer(time.monotonic(), payload)
            while len(self._answers) > 10_000:
                self._answers.popitem(last=False)
        return payload


def _claims_from_introspection(payload: dict[str, Any]) -> Claims:
    """Claims for a token only introspection vouches for (no local verification)."""
    token_type = payload.get("token_type")
    if token_type in ("refresh", "refresh_token"):
        raise WrongTokenType("This endpoint needs the access token, not the refresh token.")
    raw = {key: value for key, value in payload.items() if key != "active"}
    raw["type"] = "access"
    raw.setdefault("iat", raw.get("exp", 0))
    try:
        return claims_from_payload(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenInvalid() from exc


class RemoteAuthority:
    """What the guards ask in resource-server mode: the same questions as of ``Accounts``
    (``verify_access``, ``user_for``, ``client_for``), answered without the database."""

    def __init__(
        self,
        *,
        keys: RemoteKeys | None,
        feed: RevocationFeed | None,
        introspector: Introspector | None,
        http: httpx.AsyncClient,
        hooks: AuthHooks | None = None,
    ) -> None:
        if keys is None and introspector is None:
            raise ConfigError("resource-server mode needs AUTH_JWKS_URL or AUTH_INTROSPECTION_URL")
        self.keys = keys
        self.feed = feed
        self.introspector = introspector
        self.http = http
        self.hooks = hooks or AuthHooks()
        self._users: OrderedDict[str, User] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings, hooks: AuthHooks | None = None) -> RemoteAuthority:
        http = httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False)
        keys = (
            RemoteKeys(
                settings.jwks_url,
                http,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                leeway=settings.jwt_leeway,
                cache_seconds=settings.jwks_cache_seconds,
                min_refetch_seconds=settings.jwks_min_refetch_seconds,
            )
            if settings.jwks_url
            else None
        )
        introspector = None
        if settings.introspection_url:
            if not settings.client_id or settings.client_secret is None:
                raise ConfigError(
                    "AUTH_INTROSPECTION_URL needs AUTH_CLIENT_ID and AUTH_CLIENT_SECRET "
                    "(create a client with: auth-service clients create NAME)"
                )
            introspector = Introspector(
                settings.introspection_url,
                http,
                client_id=settings.client_id,
                secret=settings.client_secret.get_secret_value(),
                cache=settings.introspection_cache_seconds,
            )
        feed = (
            RevocationFeed(settings.redis_url, settings.redis_prefix)
            if settings.redis_url
            else None
        )
        return cls(keys=keys, feed=feed, introspector=introspector, http=http, hooks=hooks)

    async def verify_access(self, token: str) -> Claims:
        if self.keys is None:
            assert self.introspector is not None
            answer = await self.introspector.ask(token)
            if not answer["active"]:
                raise TokenInvalid("The token is not active.")
            return _claims_from_introspection(answer)
        verifier = await self.keys.verifier_for(token)
        claims = verifier.decode(token, expected_type="access")
        if self.introspector is not None and not (await self.introspector.ask(token))["active"]:
            # Verified here, yet the service says it is no longer valid: revoked since.
            raise TokenRevoked()
        return claims

    async def _refused(self, claims: Claims) -> bool:
        hooks = self.hooks
        if hooks.revocation_check is not None and await hooks.revocation_check(claims):
            return True
        return self.feed is not None and await self.feed.refuses(claims)

    async def user_for(self, claims: Claims) -> User:
        """The user the token speaks for, as far as the token tells (``id``, ``username``,
        ``roles``): a resource server holds no user table. Refused when revoked."""
        if await self._refused(claims):
            raise TokenRevoked()
        user = self._user(claims)
        if self.hooks.user_loader is not None:
            user = await self.hooks.user_loader(claims, user)
        return user

    async def client_for(self, claims: Claims) -> None:
        if await self._refused(claims):
            raise TokenRevoked()

    def _user(self, claims: Claims) -> User:
        known = self._users.get(claims.jti)
        if known is not None:
            self._users.move_to_end(claims.jti)
            return known
        try:
            user_id = uuid.UUID(claims.subject)
        except ValueError:
            raise TokenInvalid() from None
        user = User(
            id=user_id,
            username=claims.username or claims.subject,
            email="",
            name=None,
            password_hash="",
            roles=list(claims.roles),
            is_active=True,
            token_version=claims.version,
        )
        self._users[claims.jti] = user
        while len(self._users) > 10_000:
            self._users.popitem(last=False)
        return user

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        if self.feed is not None:
            await self.feed.ping()
            checks["redis"] = "ok"
        return checks

    async def close(self) -> None:
        await self.http.aclose()
        if self.feed is not None:
            await self.feed.close()
