"""Testing apps that use the auth service: the pytest plugin's fixtures and their helpers."""

from service.testing.plugin import (
    AppFactory,
    AuthUser,
    BearerClientFactory,
    TokenMinter,
    UserMaker,
    enable,
)

__all__ = ["AppFactory", "AuthUser", "BearerClientFactory", "TokenMinter", "UserMaker", "enable"]
