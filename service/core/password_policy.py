"""Which new passwords are refused: common ones, and ones equal to the username or email.

The common-password list is the 30,000 most frequent passwords bundled with the maintained
`zxcvbn` package (its ``frequency_lists.FREQUENCY_LISTS["passwords"]``), compared in lower case.
"""

from __future__ import annotations

import unicodedata
from functools import cache

from zxcvbn.frequency_lists import FREQUENCY_LISTS


@cache
def common_passwords() -> frozenset[str]:
    return frozenset(word.lower() for word in FREQUENCY_LISTS["passwords"])


def password_problem(password: str, *, username: str | None, email: str | None) -> str | None:
    """Why ``password`` is refused, or None. Lengths are checked by the schemas."""
    normalized = unicodedata.normalize("NFKC", password).casefold()
    if normalized in common_passwords():
        return "This password is one of the most common passwords; choose another."
    for label, value in (("username", username), ("email address", email)):
        if value and normalized == unicodedata.normalize("NFKC", value).casefold():
            return f"The password must not be your {label}."
    if email and normalized == email.split("@", 1)[0].casefold():
        return "The password must not be the name part of your email address."
    return None
