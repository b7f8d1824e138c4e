"""The use-case layer: ``Accounts`` and what its callers pass to it and get back. No HTTP."""

from service.accounts.accounts import Accounts
from service.accounts.hooks import AuthHooks
from service.accounts.sessions import ClientInfo, SessionPolicy, TokenPair

__all__ = ["Accounts", "AuthHooks", "ClientInfo", "SessionPolicy", "TokenPair"]
