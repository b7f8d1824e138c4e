"""Recorded WebAuthn payloads checked by the service's own verification code
(``service/accounts/passkeys.py``), with no app and no database: fixed bytes, made once by
tests/webauthn_authenticator.py with a fixed P-256 key, credential id, AAGUID and user handle,
for the relying party ``auth.example.com`` at ``https://auth.example.com``, answering the
fixed challenges below (bytes 0..31 to register, 32..63 to log in). The assertions were signed
with the counter at 5.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from service.accounts.passkeys import (
    CeremonyFailed,
    ClonedAuthenticator,
    Registration,
    RelyingParty,
    challenge_handle,
    parse_assertion,
    parse_registration,
    verify_assertion,
    verify_registration,
)
from tests.webauthn_authenticator import b64url, unb64url

RP = RelyingParty(id="auth.example.com", origin="https://auth.example.com")
REGISTRATION_CHALLENGE = bytes(range(32))
LOGIN_CHALLENGE = bytes(range(32, 64))
USER_HANDLE = bytes.fromhex("0f8fad5bd9cb469fa16570867728950e")
CREDENTIAL_ID = bytes.fromhex("c0ffee00112233445566778899aabbcc")
AAGUID = "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"

REGISTRATION: dict[str, Any] = {
    "id": "wP_uABEiM0RVZneImaq7zA",
    "rawId": "wP_uABEiM0RVZneImaq7zA",
    "type": "public-key",
    "response": {
        "clientDataJSON": (
            "eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIiwiY2hhbGxlbmdlIjoiQUFFQ0F3UUZCZ2NJQ1Fv"
            "TERBME9EeEFSRWhNVUZSWVhHQmthR3h3ZEhoOCIsIm9yaWdpbiI6Imh0dHBzOi8vYXV0aC5l"
            "eGFtcGxlLmNvbSIsImNyb3NzT3JpZ2luIjpmYWxzZX0"
        ),
        "attestationObject": (
            "o2NmbXRkbm9uZWdhdHRTdG10oGhhdXRoRGF0YViUwgTIVP_l81o7hSCL2YnGDRxW1Wz9mm4v"
            "WPKLltF-BzNFAAAAAOqbjWZNAR0hPOS2tIy1ddQAEMD_7gARIjNEVWZ3iJmqu8ylAQIDJiAB"
            "IVggMdpMeTVE_IUGGzppX6_ym7nFm-REkWRk4-rFdRraFIEiWCDfj4P8pSHBKapPjvo5LT8m"
            "M3yUuFZW9nLSyDQAI-6ITw"
        ),
        "transports": ["usb"],
    },
    "clientExtensionResults": {},
    "authenticatorAttachment": "platform",
}
REGISTRATION_NO_UV: dict[str, Any] = {
    "id": "wP_uABEiM0RVZneImaq7zA",
    "rawId": "wP_uABEiM0RVZneImaq7zA",
    "type": "public-key",
    "response": {
        "clientDataJSON": (
            "eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIiwiY2hhbGxlbmdlIjoiQUFFQ0F3UUZCZ2NJQ1Fv"
            "TERBME9EeEFSRWhNVUZSWVhHQmthR3h3ZEhoOCIsIm9yaWdpbiI6Imh0dHBzOi8vYXV0aC5l"
            "eGFtcGxlLmNvbSIsImNyb3NzT3JpZ2luIjpmYWxzZX0"
        ),
        "attestationObject": (
            "o2NmbXRkbm9uZWdhdHRTdG10oGhhdXRoRGF0YViUwgTIVP_l81o7hSCL2YnGDRxW1Wz9mm4v"
            "WPKLltF-BzNBAAAAAOqbjWZNAR0hPOS2tIy1ddQAEMD_7gARIjNEVWZ3iJmqu8ylAQIDJiAB"
            "IVggMdpMeTVE_IUGGzppX6_ym7nFm-REkWRk4-rFdRraFIEiWCDfj4P8pSHBKapPjvo5LT8m"
            "M3yUuFZW9nLSyDQAI-6ITw"
        ),
        "transports": ["usb"],
    },
    "clientExtensionResults": {},
    "authenticatorAttachment": "platform",
}
ASSERTION: dict[str, Any] = {
    "id": "wP_uABEiM0RVZneImaq7zA",
    "rawId": "wP_uABEiM0RVZneImaq7zA",
    "type": "public-key",
    "response": {
        "clientDataJSON": (
            "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0IiwiY2hhbGxlbmdlIjoiSUNFaUl5UWxKaWNvS1NvckxD"
            "MHVMekF4TWpNME5UWTNPRGs2T3p3OVBqOCIsIm9yaWdpbiI6Imh0dHBzOi8vYXV0aC5leGFt"
            "cGxlLmNvbSIsImNyb3NzT3JpZ2luIjpmYWxzZX0"
        ),
        "authenticatorData": "wgTIVP_l81o7hSCL2YnGDRxW1Wz9mm4vWPKLltF-BzMFAAAABQ",
        "signature": (
            "MEUCIQCkNM7kt8noc7u1vMch1u-qvsQgmI5ZuPmUQhkGTnTlmgIgXBAaX_B4WWjfwgy7A0do"
            "8PWOfUu7WNBku1-rCRl0E4M"
        ),
        "userHandle": "D4-tW9nLRp-hZXCGdyiVDg",
    },
    "clientExtensionResults": {},
    "authenticatorAttachment": "platform",
}
ASSERTION_WRONG_ORIGIN: dict[str, Any] = {
    "id": "wP_uABEiM0RVZneImaq7zA",
    "rawId": "wP_uABEiM0RVZneImaq7zA",
    "type": "public-key",
    "response": {
        "clientDataJSON": (
            "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0IiwiY2hhbGxlbmdlIjoiSUNFaUl5UWxKaWNvS1NvckxD"
            "MHVMekF4TWpNME5UWTNPRGs2T3p3OVBqOCIsIm9yaWdpbiI6Imh0dHBzOi8vYXV0aC5leGFt"
            "cGxlLmNvbS5ldmlsLmV4YW1wbGUiLCJjcm9zc09yaWdpbiI6ZmFsc2V9"
        ),
        "authenticatorData": "wgTIVP_l81o7hSCL2YnGDRxW1Wz9mm4vWPKLltF-BzMFAAAABQ",
        "signature": (
            "MEUCIF7rIol4sumEaSYT3mNXaRP2tooalw73se9f-mbu4OL9AiEAjJ_gGpj61_8Vym3C1d_8"
            "9eC7fVIWrQWdPWN6_z_lG6c"
        ),
        "userHandle": "D4-tW9nLRp-hZXCGdyiVDg",
    },
    "clientExtensionResults": {},
    "authenticatorAttachment": "platform",
}
ASSERTION_WRONG_RP_ID: dict[str, Any] = {
    "id": "wP_uABEiM0RVZneImaq7zA",
    "rawId": "wP_uABEiM0RVZneImaq7zA",
    "type": "public-key",
    "response": {
        "clientDataJSON": (
            "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0IiwiY2hhbGxlbmdlIjoiSUNFaUl5UWxKaWNvS1NvckxD"
            "MHVMekF4TWpNME5UWTNPRGs2T3p3OVBqOCIsIm9yaWdpbiI6Imh0dHBzOi8vYXV0aC5leGFt"
            "cGxlLmNvbSIsImNyb3NzT3JpZ2luIjpmYWxzZX0"
        ),
        "authenticatorData": "nBgN4M1pnueIl8R8_bPn7h11kG4xt3RqR0fepTaQmDcFAAAABQ",
        "signature": (
            "MEYCIQDgMs8ioihKONMen8Q3TLvQ3MIhpho3LptaxEW3QtEUtQIhAKc_wLGa4n_uhz_eHdgk"
            "OKAYtnuDSetB-NnhwuUMQeMM"
        ),
        "userHandle": "D4-tW9nLRp-hZXCGdyiVDg",
    },
    "clientExtensionResults": {},
    "authenticatorAttachment": "platform",
}
ASSERTION_NO_UV: dict[str, Any] = {
    "id": "wP_uABEiM0RVZneImaq7zA",
    "rawId": "wP_uABEiM0RVZneImaq7zA",
    "type": "public-key",
    "response": {
        "clientDataJSON": (
            "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0IiwiY2hhbGxlbmdlIjoiSUNFaUl5UWxKaWNvS1NvckxD"
            "MHVMekF4TWpNME5UWTNPRGs2T3p3OVBqOCIsIm9yaWdpbiI6Imh0dHBzOi8vYXV0aC5leGFt"
            "cGxlLmNvbSIsImNyb3NzT3JpZ2luIjpmYWxzZX0"
        ),
        "authenticatorData": "wgTIVP_l81o7hSCL2YnGDRxW1Wz9mm4vWPKLltF-BzMBAAAABQ",
        "signature": (
            "MEYCIQDi0nUfAswb6mnA2mDFDf48Zmc6AzF1_feVOM6sin-65wIhAJoiLCkAj0lA7ZN6Hl7Y"
            "UEGrYboB2gv53ZXW-63oXw9w"
        ),
        "userHandle": "D4-tW9nLRp-hZXCGdyiVDg",
    },
    "clientExtensionResults": {},
    "authenticatorAttachment": "platform",
}


def registered(credential: dict[str, Any] = REGISTRATION) -> Registration:
    return verify_registration(RP, parse_registration(credential), REGISTRATION_CHALLENGE)


def check(
    credential: dict[str, Any],
    *,
    challenge: bytes = LOGIN_CHALLENGE,
    rp: RelyingParty = RP,
    sign_count: int = 4,
    require_user_verification: bool = True,
) -> Any:
    return verify_assertion(
        rp,
        parse_assertion(credential),
        challenge,
        public_key=registered().public_key,
        sign_count=sign_count,
        require_user_verification=require_user_verification,
    )


def test_the_relying_party_comes_from_the_public_url() -> None:
    assert RelyingParty.from_public_url("https://Auth.Example.com") == RP
    assert RelyingParty.from_public_url("https://auth.example.com:443/base") == RP
    assert RelyingParty.from_public_url("http://localhost:8000") == RelyingParty(
        id="localhost", origin="http://localhost:8000"
    )


def test_a_recorded_registration_verifies() -> None:
    registration = registered()

    assert registration.credential_id == CREDENTIAL_ID
    assert registration.sign_count == 0
    assert registration.aaguid == AAGUID
    assert registration.device_type == "single_device"
    assert registration.backed_up is False
    assert registration.transports == ["usb"]
    assert registration.public_key.startswith(b"\xa5")  # a COSE key: a CBOR map of 5


def test_a_registration_without_user_verification_is_accepted() -> None:
    # User verification is preferred at registration, required at a passwordless login.
    assert registered(REGISTRATION_NO_UV).credential_id == CREDENTIAL_ID


def test_the_challenge_handle_is_the_client_datas_challenge() -> None:
    credential = parse_assertion(ASSERTION)

    assert challenge_handle(credential.response.client_data_json) == b64url(LOGIN_CHALLENGE)
    assert credential.response.user_handle == USER_HANDLE


def test_a_recorded_assertion_verifies() -> None:
    assertion = check(ASSERTION)

    assert assertion.credential_id == CREDENTIAL_ID
    assert assertion.sign_count == 5
    assert assertion.user_verified is True
    assert assertion.amr == "hwk"


@pytest.mark.parametrize(
    "rp",
    [
        RelyingParty(id="auth.example.com", origin="https://auth.example.com:8443"),
        RelyingParty(id="auth.example.com", origin="http://auth.example.com"),
    ],
)
def test_a_registration_for_another_origin_is_refused(rp: RelyingParty) -> None:
    with pytest.raises(CeremonyFailed):
        verify_registration(rp, parse_registration(REGISTRATION), REGISTRATION_CHALLENGE)


def test_a_registration_for_another_rp_id_is_refused() -> None:
    rp = RelyingParty(id="example.com", origin="https://auth.example.com")

    with pytest.raises(CeremonyFailed):
        verify_registration(rp, parse_registration(REGISTRATION), REGISTRATION_CHALLENGE)


def test_a_registration_for_another_challenge_is_refused() -> None:
    with pytest.raises(CeremonyFailed):
        verify_registration(RP, parse_registration(REGISTRATION), LOGIN_CHALLENGE)


def test_an_assertion_from_another_origin_is_refused() -> None:
    with pytest.raises(CeremonyFailed, match="origin"):
        check(ASSERTION_WRONG_ORIGIN)


def test_an_assertion_for_another_rp_id_is_refused() -> None:
    with pytest.raises(CeremonyFailed, match="RP ID"):
        check(ASSERTION_WRONG_RP_ID)


def test_an_assertion_for_another_challenge_is_refused() -> None:
    with pytest.raises(CeremonyFailed, match="challenge"):
        check(ASSERTION, challenge=REGISTRATION_CHALLENGE)


def test_a_tampered_signature_is_refused() -> None:
    tampered = copy.deepcopy(ASSERTION)
    signature = bytearray(unb64url(tampered["response"]["signature"]))
    signature[-1] ^= 0x01
    tampered["response"]["signature"] = b64url(bytes(signature))

    with pytest.raises(CeremonyFailed, match="signature"):
        check(tampered)


def test_tampered_authenticator_data_is_refused() -> None:
    tampered = copy.deepcopy(ASSERTION)
    data = bytearray(unb64url(tampered["response"]["authenticatorData"]))
    data[-1] = 9  # the counter, after the signature was made
    tampered["response"]["authenticatorData"] = b64url(bytes(data))

    with pytest.raises(CeremonyFailed, match="signature"):
        check(tampered)


@pytest.mark.parametrize("stored", [5, 7])
def test_a_counter_that_did_not_increase_is_a_cloned_authenticator(stored: int) -> None:
    with pytest.raises(ClonedAuthenticator):
        check(ASSERTION, sign_count=stored)


def test_an_assertion_without_user_verification_is_refused_when_required() -> None:
    with pytest.raises(CeremonyFailed, match="verif"):
        check(ASSERTION_NO_UV)

    assert check(ASSERTION_NO_UV, require_user_verification=False).user_verified is False


def test_a_public_key_that_is_not_a_cose_key_is_a_refusal() -> None:
    with pytest.raises(CeremonyFailed):
        verify_assertion(
            RP,
            parse_assertion(ASSERTION),
            LOGIN_CHALLENGE,
            public_key=b"\xa1\x01\x02",
            sign_count=0,
            require_user_verification=True,
        )
