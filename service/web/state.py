"""What an app with the auth extension installed holds: settings, database, hasher, token keys."""

from __future__ import annotations

from dataclasses import dataclass

from quart import Quart, current_app

from service.accounts.auth import SessionPolicy
from service.accounts.hooks import AuthHooks
from service.accounts.throttle import Throttle, ThrottleLimits
from service.core.config import ConfigError, Settings, resolve_jwt_secret
from service.core.keys import load_previous_keys, load_private_key
from service.core.passwords import PasswordHasher
from service.core.tokens import HMAC_ALGORITHMS, SigningKey, TokenSettings
from service.store.db import Database
from service.web.origin import OriginPolicy

EXTENSION_KEY = "auth_service"


@dataclass
class AuthState:
    settings: Settings
    database: Database
    hasher: PasswordHasher
    tokens: TokenSettings
    policy: SessionPolicy
    hooks: AuthHooks
    throttle: Throttle | None
    origins: OriginPolicy

    @classmethod
    def build(cls, settings: Settings, hooks: AuthHooks | None = None) -> AuthState:
        return cls(
            settings=settings,
            database=Database(settings),
            hasher=PasswordHasher(settings),
            tokens=token_settings(settings),
            policy=SessionPolicy(
                reuse_grace_seconds=settings.refresh_reuse_grace_seconds,
                family_ttl=settings.refresh_family_ttl,
            ),
            hooks=hooks or AuthHooks(),
            throttle=build_throttle(settings),
            origins=OriginPolicy.from_setting(settings.allowed_origins),
        )

    async def close(self) -> None:
        await self.database.dispose()
        self.hasher.close()
        if self.throttle is not None:
            await self.throttle.close()


def build_throttle(settings: Settings) -> Throttle | None:
    if not settings.throttle_enabled:
        return None
    try:
        limits = ThrottleLimits.parse(
            settings.throttle_account_limits,
            settings.throttle_ip_limits,
            settings.throttle_refresh_limits,
        )
    except ValueError as exc:
        raise ConfigError(f"AUTH_THROTTLE_*: {exc}") from None
    return Throttle(limits, settings.redis_url, settings.redis_prefix)


def token_settings(settings: Settings) -> TokenSettings:
    algorithm = settings.jwt_algorithm
    if algorithm in HMAC_ALGORITHMS:
        key = SigningKey.hmac(algorithm, resolve_jwt_secret(settings))
    else:
        if settings.jwt_private_key_file is None:
            raise ConfigError(f"AUTH_JWT_ALGORITHM={algorithm} needs AUTH_JWT_PRIVATE_KEY_FILE")
        # load_private_key also turns a key of the wrong type (PyJWT's InvalidKeyError) or a
        # public-key PEM into the one-line ConfigError, not a traceback.
        key = load_private_key(
            algorithm, settings.jwt_private_key_file, "AUTH_JWT_PRIVATE_KEY_FILE"
        )
    return TokenSettings(
        key=key,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=settings.access_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
        leeway=settings.jwt_leeway,
        previous_keys=load_previous_keys(settings),
    )


def get_state(app: Quart | None = None) -> AuthState:
    target = app if app is not None else current_app
    try:
        state = target.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "The auth extension is not installed on this app: call AuthExtension(app) first."
        ) from None
    assert isinstance(state, AuthState)
    return state
