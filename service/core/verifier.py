"""Token verification with a memory: ``decode_token`` once per token, its times on every use.

Verifying a token is a pure function of the token, the keys and the clock, and the clock only
enters through the time claims: so a token seen before needs only its times checked again, not
a second signature check (a client sends the same access token for its whole life).
"""

from __future__ import annotations

import time
from collections import OrderedDict

from service.core.errors import TokenExpired
from service.core.tokens import (
    Claims,
    TokenSettings,
    TokenType,
    check_times,
    expect_type,
    verify_token,
)


class VerifiedTokens:
    """Tokens whose signature, issuer, audience and claim types were verified, with their claims.

    Bounded (least recently used out first). Only tokens that verified are kept.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Claims] = OrderedDict()

    def get(self, token: str) -> Claims | None:
        claims = self._entries.get(token)
        if claims is not None:
            self._entries.move_to_end(token)
        return claims

    def put(self, token: str, claims: Claims) -> None:
        self._entries[token] = claims
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __contains__(self, token: object) -> bool:
        return token in self._entries

    def discard(self, token: str) -> None:
        self._entries.pop(token, None)

    def __len__(self) -> int:
        return len(self._entries)


class TokenVerifier:
    """``decode_token`` for one ``TokenSettings``, remembering the tokens that verified.

    The memory belongs to these settings: a verifier built for other keys starts empty.
    """

    def __init__(self, settings: TokenSettings, *, max_entries: int = 10_000) -> None:
        self.settings = settings
        self.verified = VerifiedTokens(max_entries)

    def decode(self, token: str, *, expected_type: TokenType, now: float | None = None) -> Claims:
        clock = time.time() if now is None else now
        known = self.verified.get(token)
        if known is None:
            known = verify_token(self.settings, token, now=clock)
            self.verified.put(token, known)
        else:
            try:
                check_times(known.raw, clock, self.settings.leeway)
            except TokenExpired:
                self.verified.discard(token)
                raise
        return expect_type(known, expected_type)
