"""The one cross-site check of every endpoint that sets or uses the session cookies.

SameSite=Lax cookies travel between the ports of one host, and a form posted from another
site can still *set* cookies (login CSRF: the victim's browser logged into the attacker's
account). So every such endpoint asks the browser where the request came from:

- an ``Origin`` among the configured ones (``AUTH_ALLOWED_ORIGINS``) is allowed;
- otherwise a ``Sec-Fetch-Site`` other than ``same-origin`` or ``none`` (typed into the address
  bar) is refused, and so is an ``Origin`` that is not this service's own (same host and port
  as the request);
- ``Origin: null`` (a no-referrer policy, a sandboxed frame) only with ``Sec-Fetch-Site:
  same-origin``;
- with neither header, the request is not from a browser that could be tricked: allowed.

The allow-list is parsed once, at start-up. Pure: no framework import.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

BROWSER_OWN_SITE = frozenset({"same-origin", "none"})


def _normalised(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


@dataclass(frozen=True)
class OriginPolicy:
    allowed: frozenset[str] = frozenset()

    @classmethod
    def from_list(cls, origins: Iterable[str]) -> OriginPolicy:
        return cls(frozenset(_normalised(o) for o in origins if o.strip()))

    @classmethod
    def from_setting(cls, text: str) -> OriginPolicy:
        """``AUTH_ALLOWED_ORIGINS``: comma-separated origins."""
        return cls.from_list(text.split(","))

    def allows(self, *, origin: str | None, fetch_site: str | None, host: str) -> bool:
        """Whether a request with these headers, sent to ``host``, came from this site."""
        if origin is not None and origin != "null" and _normalised(origin) in self.allowed:
            return True  # a listed origin: its fetches are cross-site by definition
        if fetch_site is not None and fetch_site not in BROWSER_OWN_SITE:
            return False
        if origin is None:
            return True
        if origin == "null":
            return fetch_site == "same-origin"
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:  # not a URL at all, e.g. "http://["
            return False
        return bool(netloc) and netloc.lower() == host.lower()
