"""Awaitable hooks where an app plugs its own logic into token issuing and the guards."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from service.core.tokens import Claims
from service.store.models import User

AdditionalClaims = Callable[[User], Awaitable[dict[str, Any]]]
UserLoader = Callable[[Claims, User], Awaitable[User]]
RevocationCheck = Callable[[Claims], Awaitable[bool]]


@dataclass(frozen=True)
class AuthHooks:
    """Each hook is awaited, never called synchronously.

    - ``additional_claims(user)``: extra claims for access tokens (the service's own win).
    - ``user_loader(claims, user)``: after the built-in checks, returns the user the request
      sees (the same, an enriched one), or raises an APIError to refuse.
    - ``revocation_check(claims)``: True refuses the token with 401 TOKEN_REVOKED.
    """

    additional_claims: AdditionalClaims | None = None
    user_loader: UserLoader | None = None
    revocation_check: RevocationCheck | None = None
