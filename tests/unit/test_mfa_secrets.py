"""The second factor's secrets at rest: the sealed TOTP key (service/core/secretbox.py), the
recovery codes' typed forms, and the AUTH_MFA_KEY setting."""

from __future__ import annotations

import pytest

from service.accounts.mfa import normalize_recovery_code
from service.core.config import ConfigError, load_settings
from service.core.secretbox import SealedValueInvalid, SecretBox

KEY = b"k" * 32


def test_a_sealed_value_opens_with_its_key_and_purpose() -> None:
    box = SecretBox(KEY)

    sealed = box.seal("JBSWY3DPEHPK3PXP", purpose="totp:alice")

    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert box.open(sealed, purpose="totp:alice") == "JBSWY3DPEHPK3PXP"
    # A fresh nonce each time: the same secret never seals to the same text.
    assert box.seal("JBSWY3DPEHPK3PXP", purpose="totp:alice") != sealed


@pytest.mark.parametrize(
    "opening",
    [
        lambda sealed: SecretBox(KEY).open(sealed, purpose="totp:bob"),  # another user's row
        lambda sealed: SecretBox(b"x" * 32).open(sealed, purpose="totp:alice"),  # another key
        lambda sealed: SecretBox(KEY).open(sealed[:-2] + "AA", purpose="totp:alice"),
        lambda sealed: SecretBox(KEY).open("v2." + sealed[3:], purpose="totp:alice"),
        lambda sealed: SecretBox(KEY).open("v1.", purpose="totp:alice"),
        lambda sealed: SecretBox(KEY).open("v1.!!!", purpose="totp:alice"),
    ],
    ids=["other-purpose", "other-key", "altered", "unknown-version", "empty", "not-base64"],
)
def test_anything_else_does_not_open(opening: object) -> None:
    sealed = SecretBox(KEY).seal("JBSWY3DPEHPK3PXP", purpose="totp:alice")

    with pytest.raises(SealedValueInvalid):
        opening(sealed)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("k3v7q-xm2pa", "k3v7qxm2pa"),
        ("K3V7Q-XM2PA", "k3v7qxm2pa"),
        (" k3v7q xm2pa ", "k3v7qxm2pa"),
        ("k3v7qxm2pa", "k3v7qxm2pa"),
        ("k3v7q-xm2p", None),  # too short
        ("k3v7q-xm2pa1", None),  # 1 is not base32
        ("123456", None),
    ],
)
def test_recovery_codes_are_read_in_any_case_with_any_separator(
    typed: str, stored: str | None
) -> None:
    assert normalize_recovery_code(typed) == stored


def test_a_short_mfa_key_is_one_line_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_MFA_KEY", "short")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert str(caught.value).startswith("AUTH_MFA_KEY: ")
    assert "at least 32" in str(caught.value)
    assert "\n" not in str(caught.value)
