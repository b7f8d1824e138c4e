"""What the guards ask of whoever vouches for tokens: ``Accounts`` in the service (its
database), ``RemoteAuthority`` in a resource server (the service's JWKS, Redis, /introspect)."""

from __future__ import annotations

from typing import Protocol

from service.core.tokens import Claims
from service.store.models import User


class Authority(Protocol):
    async def verify_access(self, token: str) -> Claims:
        """The verified claims of an access token; else the APIError that refuses it."""
        ...

    async def user_for(self, claims: Claims) -> User:
        """The live user a user's access token speaks for; else the APIError that refuses it."""
        ...

    async def client_for(self, claims: Claims) -> None:
        """Refuse a machine client's token unless the client and token are still live."""
        ...

    async def close(self) -> None: ...
