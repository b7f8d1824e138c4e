"""auth-service: JWT authentication for Quart, as a service of its own or inside your app.

The public API is what this module exports; everything else is internal and may change::

    from service import AuthExtension, current_user, token_required

Names are imported on first use, so ``import service`` (the pytest plugin does, in every
pytest run) loads neither Quart nor SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.accounts import Accounts, AuthHooks, ClientInfo, TokenPair
    from service.core.config import ConfigError, Settings, load_settings
    from service.core.errors import APIError, ErrorCode
    from service.core.tokens import Claims
    from service.store.models import User
    from service.web.app import AuthExtension, create_app
    from service.web.guards import (
        current_claims,
        current_user,
        fresh_required,
        roles_required,
        scope_required,
        token_required,
    )
    from service.web.state import get_accounts

# name -> the module that defines it
_EXPORTS = {
    "AuthExtension": "service.web.app",
    "create_app": "service.web.app",
    "AuthHooks": "service.accounts",
    "Accounts": "service.accounts",
    "ClientInfo": "service.accounts",
    "TokenPair": "service.accounts",
    "get_accounts": "service.web.state",
    "Settings": "service.core.config",
    "ConfigError": "service.core.config",
    "load_settings": "service.core.config",
    "APIError": "service.core.errors",
    "ErrorCode": "service.core.errors",
    "Claims": "service.core.tokens",
    "User": "service.store.models",
    "token_required": "service.web.guards",
    "fresh_required": "service.web.guards",
    "roles_required": "service.web.guards",
    "scope_required": "service.web.guards",
    "current_user": "service.web.guards",
    "current_claims": "service.web.guards",
}

__all__ = [
    "APIError",
    "Accounts",
    "AuthExtension",
    "AuthHooks",
    "Claims",
    "ClientInfo",
    "ConfigError",
    "ErrorCode",
    "Settings",
    "TokenPair",
    "User",
    "create_app",
    "current_claims",
    "current_user",
    "fresh_required",
    "get_accounts",
    "load_settings",
    "roles_required",
    "scope_required",
    "token_required",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'service' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
