"""The second factor's pure parts (``service/accounts/mfa.py``): which time step a TOTP code is
of (RFC 6238, one step of tolerance either side), recovery codes as typed, the QR code, and the
stored forms of bearer secrets. No app, no database."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

import pyotp
import pytest

from service.accounts.mfa import (
    RECOVERY_CODE_COUNT,
    _qr_svg,
    _recovery_code,
    matching_step,
    normalize_recovery_code,
    password_fingerprint,
    token_handle,
)

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_900_000_005.0  # 5 s into step 63_333_333
STEP = int(NOW) // 30


def code_at(step: int) -> str:
    return pyotp.TOTP(SECRET).at(step * 30)


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_a_code_of_now_or_one_step_either_side_matches_its_step(offset: int) -> None:
    assert matching_step(SECRET, code_at(STEP + offset), now=NOW) == STEP + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_a_code_two_or_more_steps_away_matches_nothing(offset: int) -> None:
    assert matching_step(SECRET, code_at(STEP + offset), now=NOW) is None


def test_the_step_follows_the_clock_not_the_code() -> None:
    code = code_at(STEP)

    assert matching_step(SECRET, code, now=NOW + 30) == STEP
    assert matching_step(SECRET, code, now=NOW + 60) is None


@pytest.mark.parametrize(
    "typed", ["", "12345", "1234567", "abcdef", "12 34 56", "\uff11\uff12\uff13\uff14\uff15\uff16"]
)
def test_anything_but_six_ascii_digits_matches_nothing(typed: str) -> None:
    assert matching_step(SECRET, typed, now=NOW) is None


def test_surrounding_spaces_are_ignored() -> None:
    assert matching_step(SECRET, f" {code_at(STEP)}\n", now=NOW) == STEP


def test_recovery_codes_are_two_groups_of_five_base32_characters_and_differ() -> None:
    codes = [_recovery_code() for _ in range(RECOVERY_CODE_COUNT * 20)]

    assert all(re.fullmatch(r"[a-z2-7]{5}-[a-z2-7]{5}", code) for code in codes)
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize(
    "typed", ["abcde-fgh23", "ABCDE-FGH23", "abcdefgh23", " abcde fgh23 ", "ab-cde-fg-h23"]
)
def test_a_recovery_code_is_read_in_any_case_with_or_without_dashes(typed: str) -> None:
    assert normalize_recovery_code(typed) == "abcdefgh23"


@pytest.mark.parametrize("typed", ["", "abcde", "abcde-fgh2345", "abcde-fgh01", "abcde_fgh23"])
def test_what_cannot_be_a_recovery_code_is_none(typed: str) -> None:
    assert normalize_recovery_code(typed) is None


def test_the_qr_code_is_a_standalone_svg_with_no_external_reference() -> None:
    uri = pyotp.TOTP(SECRET).provisioning_uri(name="alice", issuer_name="auth-service")

    svg = _qr_svg(uri)

    root = ElementTree.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert not svg.startswith("<?xml")
    assert "href" not in svg
    assert "<script" not in svg
    assert "<image" not in svg
    assert "url(" not in svg


def test_bearer_secrets_and_password_hashes_are_stored_as_digests() -> None:
    token = "an-mfa-token-value"
    password_hash = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA"

    assert token_handle(token) != token
    assert re.fullmatch(r"[0-9a-f]{64}", token_handle(token))
    assert token_handle(token) == token_handle(token)
    assert password_hash not in password_fingerprint(password_hash)
    assert password_fingerprint(password_hash) != password_fingerprint(password_hash + "x")
