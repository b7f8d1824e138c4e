"""What an app with the auth extension installed holds: its settings, its ``Accounts``, and the
cross-site policy parsed from the settings once."""

from __future__ import annotations

from dataclasses import dataclass

from quart import Quart, current_app

from service.accounts import Accounts, AuthHooks
from service.core.config import Settings
from service.web.origin import OriginPolicy

EXTENSION_KEY = "auth_service"


@dataclass
class AuthState:
    settings: Settings
    accounts: Accounts
    origins: OriginPolicy

    @classmethod
    def build(cls, settings: Settings, hooks: AuthHooks | None = None) -> AuthState:
        return cls(
            settings=settings,
            accounts=Accounts.from_settings(settings, hooks),
            # The cookie session's Origin check accepts the CORS origins too (never "*").
            origins=OriginPolicy.from_list(
                [
                    *settings.allowed_origins.split(","),
                    *(o for o in settings.cors_origin_list if o != "*"),
                ]
            ),
        )

    async def close(self) -> None:
        await self.accounts.close()


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


def get_accounts() -> Accounts:
    """This app's use cases (the routes call one method each)."""
    return get_state().accounts
