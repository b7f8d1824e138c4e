"""DIAGNOSTIC ONLY, not a valid configuration: our service with the guard's ``verify_access``
(the user + session + revocation check of every guarded request) answered from a plain dict per
token ``jti`` after the first call, so revocation is NOT checked at all. It measures what that
step costs on GET /protected in the benchmarked commit; nothing else differs from
``service.asgi:app``.
"""

from __future__ import annotations

from typing import Any

from service.web import guards
from service.asgi import app

_original = guards.verify_access
_cache: dict[str, Any] = {}


async def _cached_verify_access(database: Any, claims: Any) -> Any:
    user = _cache.get(claims.jti)
    if user is None:
        user = _cache[claims.jti] = await _original(database, claims)
    return user


guards.verify_access = _cached_verify_access  # type: ignore[assignment]

__all__ = ["app"]
