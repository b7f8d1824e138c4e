"""What an app with the auth extension installed holds: settings, database, hasher, token keys."""

from __future__ import annotations

from dataclasses import dataclass

from quart import Quart, current_app

from .config import ConfigError, Settings, resolve_jwt_secret
from .db import Database
from .passwords import PasswordHasher
from .tokens import HMAC_ALGORITHMS, SigningKey, TokenSettings

EXTENSION_KEY = "auth_service"


@dataclass
class AuthState:
    settings: Settings
    database: Database
    hasher: PasswordHasher
    tokens: TokenSettings

    @classmethod
    def build(cls, settings: Settings) -> AuthState:
        return cls(
            settings=settings,
            database=Database(settings),
            hasher=PasswordHasher(settings),
            tokens=token_settings(settings),
        )

    async def close(self) -> None:
        await self.database.dispose()
        self.hasher.close()


def token_settings(settings: Settings) -> TokenSettings:
    algorithm = settings.jwt_algorithm
    if algorithm in HMAC_ALGORITHMS:
        key = SigningKey.hmac(algorithm, resolve_jwt_secret(settings))
    else:
        if settings.jwt_private_key_file is None:
            raise ConfigError(f"AUTH_JWT_ALGORITHM={algorithm} needs AUTH_JWT_PRIVATE_KEY_FILE")
        try:
            pem = settings.jwt_private_key_file.read_bytes()
            key = SigningKey.from_private_pem(algorithm, pem)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"AUTH_JWT_PRIVATE_KEY_FILE {settings.jwt_private_key_file}: {exc}"
            ) from exc
    return TokenSettings(
        key=key,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=settings.access_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
        leeway=settings.jwt_leeway,
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
