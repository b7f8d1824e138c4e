"""The guards: ``token_required``, ``fresh_required``, ``roles_required``, ``scope_required``,
and ``current_user``.

Each is a verify function under a thin decorator, with an accessor that raises when the
decorator is missing. They work on the routes of any Quart app that installed the auth
extension, the service's own or a resource server's (``get_state().authority`` answers). The
token travels as ``Authorization: Bearer`` or as the ``access_token_cookie``; with the cookie,
unsafe methods must pass the CSRF check. A machine client's token (client credentials) passes
only ``scope_required``; the user guards refuse it (401 WRONG_TOKEN_TYPE).

On a ``websocket`` route the same decorators check the handshake (``service/web/sockets.py``):
a refused token is an HTTP 401/403 answer before the socket opens, and an open socket whose
token is revoked is closed with 1008.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from quart.globals import _cv_app, _cv_request, _cv_websocket
from quart_schema.openapi import QUART_SCHEMA_SECURITY_ATTRIBUTE
from werkzeug.sansio.request import Request as BaseRequest

from service.core.errors import (
    AccountDisabled,
    CsrfFailed,
    FreshTokenRequired,
    InsufficientRole,
    InsufficientScope,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
    TokenRevoked,
    WrongTokenType,
)
from service.core.tokens import Claims
from service.store.models import User
from service.web.http import documents_errors
from service.web.sockets import guard_socket
from service.web.state import get_state
from service.web.transport import (
    Transport,
    access_token_of,
    check_csrf,
    incoming,
    require_same_site,
)

if TYPE_CHECKING:
    from service.accounts.authority import Authority

P = ParamSpec("P")
R = TypeVar("R")
View = Callable[P, Awaitable[R]]

GUARD_ATTRIBUTE = "_auth_guard"
SECURITY_REQUIREMENTS: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"oauth2": []}]
_AUTH = "_auth_context"

GUARD_ERRORS = (
    TokenMissing,
    TokenInvalid,
    TokenExpired,
    TokenRevoked,
    WrongTokenType,
    AccountDisabled,
)


@dataclass(frozen=True)
class AuthContext:
    user: User | None  # None for a machine client's token
    claims: Claims
    transport: Transport


def same_site_required(view: View[P, R]) -> View[P, R]:
    """For endpoints that set the session cookies: refuse requests sent from another site
    (login CSRF), before the body is read."""

    @wraps(view)
    async def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        require_same_site()
        return await view(*args, **kwargs)

    return documents_errors(CsrfFailed)(checked)


async def authenticate_request(*, clients_allowed: bool = False) -> AuthContext:
    """Verify the request's access token and load its user (or, where ``clients_allowed``,
    check its machine client); the hooks are awaited here."""
    return await _authenticate(get_state().authority, incoming(), clients_allowed)


async def _authenticate(
    authority: Authority, asked: BaseRequest, clients_allowed: bool
) -> AuthContext:
    token, transport = access_token_of(asked)
    claims = await authority.verify_access(token)
    if transport == "cookie":
        check_csrf(claims)
    if claims.client_id is not None:
        if not clients_allowed:
            raise WrongTokenType("This endpoint needs a user's access token, not a client's.")
        await authority.client_for(claims)
        return AuthContext(user=None, claims=claims, transport=transport)
    user = await authority.user_for(claims)
    return AuthContext(user=user, claims=claims, transport=transport)


def _remember(context: AuthContext) -> None:
    setattr(_cv_app.get().g, _AUTH, context)


def _guard(
    name: str,
    check: Callable[[AuthContext], None] | None,
    errors: tuple[type[Any], ...],
    *,
    clients_allowed: bool = False,
) -> Callable[[View[P, R]], View[P, R]]:
    def decorator(view: View[P, R]) -> View[P, R]:
        @wraps(view)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            if _cv_websocket.get(None) is not None:
                return await guard_socket(
                    lambda: view(*args, **kwargs),
                    authenticate=lambda: authenticate_request(clients_allowed=clients_allowed),
                    check=check,
                    remember=_remember,
                )
            # The app context and the request read once from Quart's context variables, where
            # each read through ``current_app``, ``request`` or ``g`` is a lookup of its own.
            app_context = _cv_app.get()
            context = await _authenticate(
                get_state(app_context.app).authority,
                _cv_request.get().request,
                clients_allowed,
            )
            if check is not None:
                check(context)
            setattr(app_context.g, _AUTH, context)
            return await view(*args, **kwargs)

        setattr(guarded, GUARD_ATTRIBUTE, name)
        setattr(guarded, QUART_SCHEMA_SECURITY_ATTRIBUTE, SECURITY_REQUIREMENTS)
        # CsrfFailed is documented per method by the OpenAPI provider: unsafe methods only.
        return documents_errors(*GUARD_ERRORS, *errors)(guarded)

    return decorator


def token_required(view: View[P, R]) -> View[P, R]:
    """Refuse the request with a 401 unless it carries a valid access token of a live user."""
    return _guard("token_required", None, ())(view)


@overload
def fresh_required(view: View[P, R], /) -> View[P, R]: ...


@overload
def fresh_required(*, max_age: int | None = None) -> Callable[[View[P, R]], View[P, R]]: ...


def fresh_required(
    view: View[P, R] | None = None, /, *, max_age: int | None = None
) -> View[P, R] | Callable[[View[P, R]], View[P, R]]:
    """Like token_required, and the token must come from a password login (``fresh``),
    optionally no older than ``max_age`` seconds; else 401 FRESH_TOKEN_REQUIRED.
    Use as ``@fresh_required`` or ``@fresh_required(max_age=300)``.
    """

    def check(context: AuthContext) -> None:
        require_fresh(context.claims, max_age)

    decorator: Callable[[View[P, R]], View[P, R]] = _guard(
        "fresh_required", check, (FreshTokenRequired,)
    )
    return decorator(view) if view is not None else decorator


def require_fresh(claims: Claims, max_age: int | None = None) -> None:
    if not claims.fresh:
        raise FreshTokenRequired()
    if max_age is not None and time.time() - claims.issued_at > max_age:
        raise FreshTokenRequired(f"Log in again: this needs a login from the last {max_age} s.")


def roles_required(*roles: str) -> Callable[[View[P, R]], View[P, R]]:
    """Like token_required, and the token must carry every role named; else 403."""

    def check(context: AuthContext) -> None:
        missing = set(roles) - set(context.claims.roles)
        if missing:
            raise InsufficientRole(f"This needs the role(s): {', '.join(sorted(missing))}.")

    return _guard(f"roles_required({', '.join(roles)})", check, (InsufficientRole,))


def scope_required(*scopes: str) -> Callable[[View[P, R]], View[P, R]]:
    """For machine routes: the access token must carry every scope named (``scope`` claim), a
    machine client's token (client credentials) included; else 403 INSUFFICIENT_SCOPE."""
    wanted = frozenset(scopes)

    def check(context: AuthContext) -> None:
        missing = wanted - context.claims.scopes
        if missing:
            raise InsufficientScope(
                f"This needs the scope(s): {' '.join(sorted(missing))}.",
                headers={"WWW-Authenticate": _insufficient_scope(wanted)},
            )

    return _guard(
        f"scope_required({', '.join(scopes)})",
        check,
        (InsufficientScope,),
        clients_allowed=True,
    )


def _insufficient_scope(scopes: frozenset[str]) -> str:
    # RFC 6750 §3: the scope needed, so a client knows what to ask for.
    return (
        f'Bearer realm="auth-service", error="insufficient_scope", '
        f'scope="{" ".join(sorted(scopes))}"'
    )


def _context() -> AuthContext:
    app_context = _cv_app.get(None)
    context = getattr(app_context.g, _AUTH, None) if app_context is not None else None
    if context is None:
        raise RuntimeError("current_user() needs a route decorated with @token_required")
    assert isinstance(context, AuthContext)
    return context


def current_user() -> User:
    """The user of the request; raises RuntimeError on a route that is not guarded, or whose
    caller is a machine client (use ``current_claims()``: ``client_id``, ``scopes``).

    In resource-server mode the user is what the token tells: ``id``, ``username``, ``roles``.
    """
    user = _context().user
    if user is None:
        raise RuntimeError("current_user(): the caller is a machine client, not a user")
    return user


def current_claims() -> Claims:
    return _context().claims


def current_transport() -> Transport:
    return _context().transport


def is_guarded(view: Any) -> bool:
    return getattr(view, GUARD_ATTRIBUTE, None) is not None
