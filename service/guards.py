"""``token_required`` and ``current_user``: the verify function, the thin decorator, the accessor.

Works on the routes of any Quart app that installed the auth extension, not only this service's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from quart import g, request
from quart_schema.openapi import QUART_SCHEMA_SECURITY_ATTRIBUTE

from .auth import user_for_claims
from .errors import AccountDisabled, TokenInvalid, TokenMissing
from .http import documents_errors
from .models import User
from .state import get_state
from .tokens import Claims, decode_token

P = ParamSpec("P")
R = TypeVar("R")

GUARD_ATTRIBUTE = "_auth_guard"
SECURITY_REQUIREMENTS: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"oauth2": []}]
_USER = "_auth_current_user"
_CLAIMS = "_auth_current_claims"


def bearer_token() -> str:
    """The token of ``Authorization: Bearer <token>``, or TokenMissing."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenMissing()
    return token.strip()


async def verify_access_request() -> tuple[User, Claims]:
    state = get_state()
    claims = decode_token(state.tokens, bearer_token(), expected_type="access")
    user = await user_for_claims(state.database, claims)
    return user, claims


def token_required(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Refuse the request with a 401 unless it carries a valid access token of a live user."""

    @wraps(view)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        user, claims = await verify_access_request()
        setattr(g, _USER, user)
        setattr(g, _CLAIMS, claims)
        return await view(*args, **kwargs)

    setattr(guarded, GUARD_ATTRIBUTE, "token_required")
    setattr(guarded, QUART_SCHEMA_SECURITY_ATTRIBUTE, SECURITY_REQUIREMENTS)
    return documents_errors(TokenMissing, TokenInvalid, AccountDisabled)(guarded)


def current_user() -> User:
    """The user of the request; raises RuntimeError on a route that is not guarded."""
    user = g.get(_USER)
    if user is None:
        raise RuntimeError("current_user() needs a route decorated with @token_required")
    assert isinstance(user, User)
    return user


def current_claims() -> Claims:
    claims = g.get(_CLAIMS)
    if claims is None:
        raise RuntimeError("current_claims() needs a route decorated with @token_required")
    assert isinstance(claims, Claims)
    return claims


def is_guarded(view: Any) -> bool:
    return getattr(view, GUARD_ATTRIBUTE, None) is not None
