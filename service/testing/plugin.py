"""pytest fixtures for apps that install the auth extension: opt-in, off by default.

Installing the package registers this module in every pytest run (the ``pytest11`` entry
point). Until enabled it only adds the ``--auth-service`` flag and the ``auth_service_plugin``
ini option, and imports nothing beyond pytest. Enable the fixtures with the flag, with
``auth_service_plugin = true`` in the ini file, or from a ``conftest.py``::

    from service.testing.plugin import enable

    def pytest_configure(config: pytest.Config) -> None:
        enable(config)

(``pytest_plugins = ["service.testing.plugin"]`` cannot work while the entry point is loaded:
pytest refuses to register one module under two names.)

Fixtures: ``auth_settings`` (override ``auth_settings_overrides`` to change fields),
``auth_app_factory`` (override it to test your own app), ``auth_app`` (started: migrations
ran), ``auth_state``, ``auth_client`` (anonymous), ``make_user``, ``auth_user``,
``mint_token``, ``bearer_client`` and ``authed_client`` (sends ``auth_user``'s bearer token).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
import types
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import pytest

if TYPE_CHECKING:
    from quart import Quart, Response
    from quart.testing.connections import (
        TestHTTPConnection as HTTPConnection,
    )
    from quart.testing.connections import (
        TestWebsocketConnection as WebsocketConnection,
    )
    from quart.typing import TestClientProtocol
    from werkzeug.datastructures import Headers

    from service.accounts import Accounts
    from service.core.config import Settings
    from service.core.tokens import TokenType
    from service.store.models import User
    from service.web.state import AuthState

FLAG = "--auth-service"
INI_OPTION = "auth_service_plugin"
FIXTURES_PLUGIN = "auth_service_fixtures"
DEFAULT_PASSWORD = "correct horse battery staple"
# Every token gets these from encode_token; the others (sid, ver, csrf, hook claims) are copied.
_REGISTERED_CLAIMS = frozenset(
    {"iss", "aud", "sub", "iat", "nbf", "exp", "jti", "type", "fresh", "roles"}
)

AppFactory: TypeAlias = "Callable[[Settings], Quart]"
BearerClientFactory: TypeAlias = "Callable[[str], TestClientProtocol]"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("auth-service", "auth-service test fixtures")
    group.addoption(
        FLAG,
        action="store_true",
        dest="auth_service",
        default=False,
        help="enable the auth-service fixtures (auth_app, make_user, mint_token, authed_client...)",
    )
    parser.addini(INI_OPTION, type="bool", default=False, help="enable the auth-service fixtures")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("auth_service") or config.getini(INI_OPTION):
        enable(config)


def enable(config: pytest.Config) -> None:
    """Register the fixtures for the whole session; calling it again changes nothing."""
    if not config.pluginmanager.has_plugin(FIXTURES_PLUGIN):
        config.pluginmanager.register(_fixtures_plugin(), FIXTURES_PLUGIN)


def isolated_settings(directory: Path, **overrides: Any) -> Settings:
    """Testing settings: a SQLite file in ``directory``, cheap argon2, a random signing key.

    Nothing is read from ``AUTH_*`` variables or ``.env``: a developer's shell cannot point a
    test at a real database or key.
    """
    values: dict[str, Any] = {
        "env": "testing",
        "database_url": f"sqlite+aiosqlite:///{directory / 'auth.db'}",
        "instance_path": directory / "instance",
        "argon2_memory_cost": 1024,
        "argon2_time_cost": 1,
        "argon2_parallelism": 1,
        "hash_workers": 2,
    }
    values.update(overrides)
    return _isolated_settings_class()(**values)


@functools.cache
def _isolated_settings_class() -> type[Settings]:
    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

    from service.core.config import Settings

    class IsolatedSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings,)

    return IsolatedSettings


@dataclass(frozen=True)
class AuthUser:
    """A user made for a test, with the password it was made with."""

    model: User
    password: str

    @property
    def id(self) -> uuid.UUID:
        return self.model.id

    @property
    def username(self) -> str:
        return self.model.username

    @property
    def email(self) -> str:
        return self.model.email

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.model.roles)

    @property
    def is_active(self) -> bool:
        return self.model.is_active


class UserMaker:
    """``await make_user(roles=["admin"], disabled=True)``: a user in the app's database."""

    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts
        self._numbers = itertools.count(1)

    async def __call__(
        self,
        username: str | None = None,
        *,
        email: str | None = None,
        password: str = DEFAULT_PASSWORD,
        name: str | None = None,
        roles: Sequence[str] = (),
        disabled: bool = False,
    ) -> AuthUser:
        accounts = self._accounts
        username = username or f"user{next(self._numbers)}"
        user = await accounts.register(
            username=username,
            email=email or f"{username}@example.com",
            password=password,
            name=name,
            roles=roles,
        )
        if disabled:
            user = await accounts.set_active(username, active=False)
        return AuthUser(user, password)


class TokenMinter:
    """``await mint_token(user, ...)``: a real token signed with the app's key.

    By default a fresh access token of a new live session, exactly as ``POST /login`` issues
    it. ``fresh=False`` (as a refresh mints), ``age`` (issued that many seconds ago),
    ``expired``, ``ttl``, ``roles`` and ``extra_claims`` (which win over the copied ``sid``,
    ``ver`` and hook claims) re-sign it with those changes, still in the same session.
    ``refresh=True`` gives the session's live refresh token instead. ``session=False`` mints
    a token with no ``sid``: access tokens without one pass the guards (user, version and
    ``jti`` are checked); refresh tokens without one are refused.
    """

    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    async def __call__(
        self,
        user: AuthUser | User,
        *,
        refresh: bool = False,
        fresh: bool = True,
        expired: bool = False,
        age: int = 0,
        ttl: int | None = None,
        roles: Sequence[str] | None = None,
        extra_claims: Mapping[str, Any] | None = None,
        session: bool = True,
    ) -> str:
        from service.accounts import ClientInfo
        from service.core.tokens import decode_token, encode_token

        accounts = self._accounts
        tokens = accounts.tokens
        token_type: TokenType = "refresh" if refresh else "access"
        # Today's roles and token version: the user may have changed since it was made.
        current = await accounts.get_user(user.id)
        claims: dict[str, Any] = {"ver": current.token_version}
        jti: str | None = None
        if session:
            pair = await accounts.start_session(current, client=ClientInfo(user_agent="pytest"))
            token = pair.refresh_token if refresh else pair.access_token
            as_issued = (fresh or refresh) and not (
                expired or age or ttl is not None or roles is not None or extra_claims
            )
            if as_issued:
                return token
            issued = decode_token(tokens, token, expected_type=token_type)
            claims = {k: v for k, v in issued.raw.items() if k not in _REGISTERED_CLAIMS}
            if refresh:
                jti = issued.jti  # the session's live refresh token: rotation accepts only it
        elif not refresh and accounts.hooks.additional_claims is not None:
            claims = {**await accounts.hooks.additional_claims(current), **claims}

        now = int(time.time())
        default_ttl = tokens.refresh_ttl if refresh else tokens.access_ttl
        lifetime = default_ttl if ttl is None else ttl
        issued_at = now - age
        expires_at = issued_at + lifetime
        if expired:
            expires_at = min(expires_at, now - tokens.leeway - 1)
            issued_at = min(issued_at, expires_at - lifetime)
        return encode_token(
            tokens,
            subject=str(current.id),
            token_type=token_type,
            now=issued_at,
            fresh=fresh and not refresh,
            roles=current.roles if roles is None else roles,
            extra_claims={**claims, **(extra_claims or {})},
            jti=jti,
            expires_at=expires_at,
        ).token


@contextlib.asynccontextmanager
async def started_app(factory: AppFactory, settings: Settings) -> AsyncIterator[Quart]:
    """``factory(settings)``, started for the block (its start-up ran: migrations, the first
    hash) and shut down after it. Checks that the factory builds the app on these settings."""
    from quart import Quart

    from service.web.state import get_state

    if isinstance(factory, Quart):
        raise TypeError(
            "auth_app_factory must return a factory (settings -> app), not an app: "
            "return create_my_app, not create_my_app()"
        )
    app = factory(settings)
    if get_state(app).settings is not settings:
        raise RuntimeError(
            "auth_app_factory must pass its settings on: AuthExtension(app, settings=settings)"
        )
    async with app.test_app():
        yield app


def client_with_token(app: Quart, token: str) -> TestClientProtocol:
    """A test client sending ``Authorization: Bearer <token>`` unless a request sets its own."""
    return cast("TestClientProtocol", _bearer_client_class()(app, token))


@functools.cache
def _bearer_client_class() -> Callable[[Quart, str], object]:
    from quart.testing import QuartClient
    from werkzeug.datastructures import Headers

    class BearerClient(QuartClient):
        def __init__(self, app: Quart, token: str) -> None:
            super().__init__(app)
            self.token = token

        def _with_token(self, headers: dict[str, str] | Headers | None) -> Headers:
            merged = Headers(headers) if headers is not None else Headers()
            merged.setdefault("Authorization", f"Bearer {self.token}")
            return merged

        async def open(
            self, path: str, *, headers: dict[str, str] | Headers | None = None, **kwargs: Any
        ) -> Response:
            return await super().open(path, headers=self._with_token(headers), **kwargs)

        def request(
            self, path: str, *, headers: dict[str, str] | Headers | None = None, **kwargs: Any
        ) -> HTTPConnection:
            return cast(
                "HTTPConnection",
                super().request(path, headers=self._with_token(headers), **kwargs),
            )

        def websocket(
            self, path: str, *, headers: dict[str, str] | Headers | None = None, **kwargs: Any
        ) -> WebsocketConnection:
            return cast(
                "WebsocketConnection",
                super().websocket(path, headers=self._with_token(headers), **kwargs),
            )

    return BearerClient


def _fixtures_plugin() -> types.ModuleType:
    """The fixtures, built (and their imports paid for) only once the plugin is enabled."""
    try:
        import pytest_asyncio
    except ImportError:
        raise pytest.UsageError(
            "The auth-service fixtures need pytest-asyncio: pip install pytest-asyncio"
        ) from None

    @pytest.fixture
    def auth_settings_overrides() -> dict[str, Any]:
        """Settings fields for ``auth_settings`` (override this fixture to change them)."""
        return {}

    @pytest.fixture
    def auth_settings(tmp_path: Path, auth_settings_overrides: dict[str, Any]) -> Settings:
        return isolated_settings(tmp_path / "auth-service", **auth_settings_overrides)

    @pytest.fixture
    def auth_app_factory() -> AppFactory:
        """``settings -> app``; override it to test your own app (it must install
        ``AuthExtension(app, settings=settings)``)."""
        from service.web.app import create_app

        return create_app

    @pytest_asyncio.fixture
    async def auth_app(
        auth_app_factory: AppFactory, auth_settings: Settings
    ) -> AsyncIterator[Quart]:
        async with started_app(auth_app_factory, auth_settings) as app:
            yield app

    @pytest.fixture
    def auth_state(auth_app: Quart) -> AuthState:
        from service.web.state import get_state

        return get_state(auth_app)

    @pytest.fixture
    def auth_client(auth_app: Quart) -> TestClientProtocol:
        return auth_app.test_client()

    @pytest.fixture
    def make_user(auth_state: AuthState) -> UserMaker:
        return UserMaker(auth_state.accounts)

    @pytest_asyncio.fixture
    async def auth_user(make_user: UserMaker) -> AuthUser:
        return await make_user()

    @pytest.fixture
    def mint_token(auth_state: AuthState) -> TokenMinter:
        return TokenMinter(auth_state.accounts)

    @pytest.fixture
    def bearer_client(auth_app: Quart) -> BearerClientFactory:
        return functools.partial(client_with_token, auth_app)

    @pytest_asyncio.fixture
    async def authed_client(
        auth_app: Quart, auth_user: AuthUser, mint_token: TokenMinter
    ) -> TestClientProtocol:
        return client_with_token(auth_app, await mint_token(auth_user))

    plugin = types.ModuleType(f"{__name__}.fixtures", _fixtures_plugin.__doc__)
    plugin.__dict__.update(
        auth_settings_overrides=auth_settings_overrides,
        auth_settings=auth_settings,
        auth_app_factory=auth_app_factory,
        auth_app=auth_app,
        auth_state=auth_state,
        auth_client=auth_client,
        make_user=make_user,
        auth_user=auth_user,
        mint_token=mint_token,
        bearer_client=bearer_client,
        authed_client=authed_client,
    )
    return plugin
