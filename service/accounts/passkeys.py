"""Passkeys (WebAuthn, py_webauthn): registration, the list, passwordless login with
discoverable credentials, and the second step of a password login. RP ID and origin come from
``AUTH_PUBLIC_URL``; challenges are single-use, short-lived, and kept server-side
(``auth_challenges``). Nothing here knows HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from service.accounts.sessions import ClientInfo, TokenPair
from service.store.models import Passkey, User

if TYPE_CHECKING:
    from service.accounts.accounts import Accounts


class Passkeys:
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    async def registration_options(self, user: User) -> dict[str, Any]:
        """PublicKeyCredentialCreationOptions as JSON (WebAuthn Level 3 ``toJSON`` form)."""
        raise NotImplementedError

    async def register(
        self, user: User, credential: Mapping[str, Any], name: str | None
    ) -> Passkey:
        raise NotImplementedError

    async def list(self, user: User) -> Sequence[Passkey]:
        raise NotImplementedError

    async def rename(self, user: User, passkey_id: uuid.UUID, name: str) -> Passkey:
        raise NotImplementedError

    async def delete(self, user: User, passkey_id: uuid.UUID) -> None:
        raise NotImplementedError

    async def login_options(self, *, mfa_token: str | None = None) -> dict[str, Any]:
        """PublicKeyCredentialRequestOptions as JSON: for discoverable credentials (no user
        known), or, with ``mfa_token``, for the second step of that login (its user's
        credentials)."""
        raise NotImplementedError

    async def login(
        self, credential: Mapping[str, Any], *, client: ClientInfo, with_csrf: bool = False
    ) -> tuple[User, TokenPair]:
        """A passwordless login: a new session whose tokens are fresh, ``amr`` hwk or swk."""
        raise NotImplementedError

    async def verify_second_factor(self, user: User, credential: Mapping[str, Any]) -> str:
        """Check an assertion of ``user``'s passkey against a live ``passkey-mfa`` challenge
        (spent); its RFC 8176 ``amr`` value (``hwk`` or ``swk``), else MfaInvalid."""
        raise NotImplementedError
