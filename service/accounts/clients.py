"""Machine clients (OAuth2 client credentials): not built yet."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.accounts.accounts import Accounts


class MachineClients:
    """The use cases of machine clients; one per ``Accounts``."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
