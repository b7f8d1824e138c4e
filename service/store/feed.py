"""The revocation feed: what the service revoked, told to resource servers through Redis.

A resource server (an app that verifies the service's tokens with its JWKS and has no access
to its database) cannot ask the database whether a token was revoked. With the service's
``AUTH_REDIS_URL`` (and ``AUTH_REDIS_PREFIX``) shared, the service writes each revocation here
after committing it and before its request returns, and a resource server reads the facts that
concern a token with one ``MGET`` per request: a logout, a revoked session, a disabled user or a
deleted client is refused there on the very next request.

The facts, each kept only as long as an access token it concerns can still be valid (the access
lifetime plus the leeway), so the key space stays as small as the set of live revocations:

- ``rv:jti:<jti>``: this access token is revoked (logout, ``/revoke``);
- ``rv:sid:<sid>``: every token of this session is (logout, session revoked, refresh-token reuse,
  password change for the other sessions, ``/revoke`` of its refresh token);
- ``rv:ver:<sub>``: the user's lowest valid token version (``ver``); raised by logout-everywhere,
  role removal and disabling, which bump the user's version;
- ``rv:client:<client_id>``: the machine client was deleted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.core.errors import RedisUnavailable
from service.core.tokens import Claims
from service.store import redis_client

# Raise the stored version, never lower it: two bumps answered out of order keep the higher.
_RAISE_VERSION = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


class RevocationFeed:
    """Both sides of the feed: ``publish_*`` for the service, ``refuses`` for resource servers."""

    def __init__(self, url: str, prefix: str, *, fact_ttl: int = 0) -> None:
        self._redis: Redis = redis_client.connect(url)
        self._prefix = f"{prefix}:rv"
        # How long a session, version or client fact must outlive its publication: the longest
        # an access token issued before it can stay valid (only the publishing side knows it).
        self._fact_ttl = max(1, fact_ttl)
        self._raise_version = self._redis.register_script(_RAISE_VERSION)

    def _key(self, kind: str, value: str) -> str:
        return f"{self._prefix}:{kind}:{value}"

    async def publish(
        self,
        *,
        tokens: Sequence[tuple[str, int]] = (),
        sessions: Sequence[str] = (),
        versions: Sequence[tuple[str, int]] = (),
        clients: Sequence[str] = (),
    ) -> None:
        """Record revoked access tokens ``(jti, exp)``, sessions, user versions ``(sub, ver)``
        and deleted clients, in one round trip."""
        if not (tokens or sessions or versions or clients):
            return
        now = int(time.time())
        pipe = self._redis.pipeline(transaction=False)
        for jti, expires_at in tokens:
            # Kept past the token's own expiry by the longest leeway a verifier allows.
            pipe.set(self._key("jti", jti), 1, ex=max(1, expires_at - now + 30))
        for sid in sessions:
            pipe.set(self._key("sid", sid), 1, ex=self._fact_ttl)
        for client_id in clients:
            pipe.set(self._key("client", client_id), 1, ex=self._fact_ttl)
        for subject, version in versions:
            await self._raise_version(
                keys=[self._key("ver", subject)], args=[version, self._fact_ttl], client=pipe
            )
        try:
            await pipe.execute()
        except RedisError as exc:
            raise RedisUnavailable() from exc

    async def refuses(self, claims: Claims) -> bool:
        """Whether a fact in the feed revokes the token with these (verified) claims."""
        keys = [self._key("jti", claims.jti)]
        client_id = claims.client_id
        if client_id is not None:
            keys.append(self._key("client", client_id))
        else:
            keys.append(self._key("ver", claims.subject))
            if claims.session_id is not None:
                keys.append(self._key("sid", claims.session_id))
        try:
            values = await self._redis.mget(keys)
        except RedisError as exc:
            raise RedisUnavailable() from exc
        if values[0] is not None:
            return True
        if client_id is not None:
            return values[1] is not None
        lowest_version = values[1]
        if lowest_version is not None and claims.version < int(lowest_version):
            return True
        return len(values) > 2 and values[2] is not None

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise RedisUnavailable() from exc

    async def close(self) -> None:
        await self._redis.aclose()
