"""DIAGNOSTIC ONLY, not a valid configuration: our service with the step that loads and checks
the user of every guarded request (user + session + revocation) answered from a plain dict per
token ``jti`` after the first call, so revocation is NOT checked at all. It measures what that
step costs on GET /protected in the benchmarked commit; nothing else differs from
``service.asgi:app``.

That step has lived in three places; whichever the benchmarked commit has is patched (TARGETS).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from service.asgi import app

# (module, class or "", attribute), newest layout first. In each, the claims are the last
# positional argument: Accounts.user_for(self, claims), verify_access(database, claims).
TARGETS = (
    ("service.accounts.accounts", "Accounts", "user_for"),  # 4651f64 on: the use-case layer
    ("service.web.guards", "", "verify_access"),  # 1cc65c3: the guard module's global
    ("service.guards", "", "verify_access"),  # before the restructure into packages
)


def _holder() -> tuple[Any, str]:
    """The object whose attribute the guard calls on every request, and the attribute's name."""
    for module_name, class_name, attribute in TARGETS:
        try:
            module: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if module_name == missing or module_name.startswith(missing + "."):
                continue
            raise  # the module exists but something it imports does not
        holder = getattr(module, class_name) if class_name else module
        if hasattr(holder, attribute):
            return holder, attribute
    raise ImportError(f"none of {TARGETS} in this commit")


_target, _name = _holder()
_original: Callable[..., Awaitable[Any]] = getattr(_target, _name)
_cache: dict[str, Any] = {}


async def _cached(*args: Any) -> Any:
    claims = args[-1]
    user = _cache.get(claims.jti)
    if user is None:
        user = _cache[claims.jti] = await _original(*args)
    return user


setattr(_target, _name, _cached)

__all__ = ["app"]
