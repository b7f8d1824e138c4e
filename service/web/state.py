"""What an app with the auth extension installed holds: its settings, the authority that vouches
for tokens (its ``Accounts``, or in resource-server mode a ``RemoteAuthority``), and the
cross-site policy parsed from the settings once."""

from __future__ import annotations

from dataclasses import dataclass

from quart import Quart, current_app

from service.accounts import Accounts, AuthHooks
from service.accounts.authority import Authority
from service.accounts.resource_server import RemoteAuthority
from service.core.config import Settings
from service.web.origin import OriginPolicy

EXTENSION_KEY = "auth_service"


@dataclass
class AuthState:
    settings: Settings
    authority: Authority
    origins: OriginPolicy
    local_accounts: Accounts | None

    @classmethod
    def build(
        cls, settings: Settings, hooks: AuthHooks | None = None, *, resource_server: bool = False
    ) -> AuthState:
        # The cookie session's Origin check accepts the CORS origins too (never "*").
        origins = OriginPolicy.from_list(
            [
                *settings.allowed_origins.split(","),
                *(o for o in settings.cors_origin_list if o != "*"),
            ]
        )
        if resource_server:
            remote = RemoteAuthority.from_settings(settings, hooks)
            return cls(settings=settings, authority=remote, origins=origins, local_accounts=None)
        accounts = Accounts.from_settings(settings, hooks)
        return cls(settings=settings, authority=accounts, origins=origins, local_accounts=accounts)

    @property
    def accounts(self) -> Accounts:
        if self.local_accounts is None:
            raise RuntimeError(
                "This app runs the auth extension in resource-server mode: it verifies tokens "
                "but holds no accounts (no database)."
            )
        return self.local_accounts

    async def close(self) -> None:
        await self.authority.close()


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
