"""Unit tests of the token module: no app, no database, a fixed clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from service.core.errors import TokenExpired, TokenInvalid, WrongTokenType
from service.core.tokens import (
    MAX_TOKEN_LENGTH,
    SigningKey,
    TokenSettings,
    decode_token,
    encode_token,
    rfc7638_thumbprint,
)
from service.core.verifier import TokenVerifier

NOW = 1_800_000_000
ISSUER = "auth-service"
AUDIENCE = "auth-service-api"
ACCESS_TTL = 900
REFRESH_TTL = 86_400
LEEWAY = 30

# RFC 7638 §3.1: the example RSA key and its published SHA-256 thumbprint.
RFC7638_EXAMPLE_KEY: dict[str, Any] = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FD"
        "W2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vM"
        "QFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_EXAMPLE_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
# The contract's "Tokens" section: verification requires exactly these claims.
DOCUMENTED_REQUIRED_CLAIMS = ("exp", "iat", "sub", "jti", "type", "iss", "aud")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def make_token_settings(key: SigningKey, **overrides: Any) -> TokenSettings:
    settings = TokenSettings(
        key=key,
        issuer=ISSUER,
        audience=AUDIENCE,
        access_ttl=ACCESS_TTL,
        refresh_ttl=REFRESH_TTL,
        leeway=LEEWAY,
    )
    return replace(settings, **overrides)


def valid_claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "3f1c2a3e-2b7c-4d8e-9f00-0123456789ab",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + ACCESS_TTL,
        "jti": "b3a1d5e0c2f94d0e8a7b6c5d4e3f2a1b",
        "type": "access",
        "fresh": False,
        "roles": [],
    }
    claims.update(overrides)
    return claims


@pytest.fixture
def secret() -> bytes:
    return secrets.token_bytes(48)


@pytest.fixture
def key(secret: bytes) -> SigningKey:
    return SigningKey.hmac("HS256", secret)


@pytest.fixture
def token_settings(key: SigningKey) -> TokenSettings:
    return make_token_settings(key)


def sign_hs256(claims: dict[str, Any], secret: bytes, kid: str, **headers: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid, **headers})


def access_token(token_settings: TokenSettings, *, now: float = NOW) -> str:
    return encode_token(token_settings, subject="user-1", token_type="access", now=now).token


# --- round trip --------------------------------------------------------------------------------


def test_round_trip_keeps_every_claim(token_settings: TokenSettings, key: SigningKey) -> None:
    issued = encode_token(
        token_settings,
        subject="user-1",
        token_type="access",
        now=NOW,
        fresh=True,
        roles=["admin", "reader"],
    )

    claims = decode_token(token_settings, issued.token, expected_type="access", now=NOW)

    assert claims.subject == "user-1"
    assert claims.token_type == "access"
    assert claims.jti == issued.jti
    assert claims.fresh is True
    assert claims.roles == ("admin", "reader")
    assert claims.issued_at == NOW
    assert claims.expires_at == NOW + ACCESS_TTL == issued.expires_at
    assert claims.raw == {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + ACCESS_TTL,
        "jti": issued.jti,
        "type": "access",
        "fresh": True,
        "roles": ["admin", "reader"],
    }
    assert jwt.get_unverified_header(issued.token) == {"alg": "HS256", "typ": "JWT", "kid": key.kid}


@pytest.mark.parametrize(
    ("sid", "expected"),
    [
        ("0b7c8a52-4a4c-4d7e-9d0e-1f2a3b4c5d6e", uuid.UUID("0b7c8a52-4a4c-4d7e-9d0e-1f2a3b4c5d6e")),
        (None, None),
        ("", None),
        ("not-a-session", None),
    ],
)
def test_the_session_id_as_a_uuid_is_none_unless_it_is_one(
    token_settings: TokenSettings, sid: str | None, expected: uuid.UUID | None
) -> None:
    extra = {} if sid is None else {"sid": sid}
    issued = encode_token(
        token_settings, subject="user-1", token_type="access", now=NOW, extra_claims=extra
    )

    claims = decode_token(token_settings, issued.token, expected_type="access", now=NOW)

    assert claims.session_uuid == expected


def test_refresh_token_round_trip_uses_refresh_ttl(token_settings: TokenSettings) -> None:
    issued = encode_token(token_settings, subject="user-1", token_type="refresh", now=NOW)

    claims = decode_token(token_settings, issued.token, expected_type="refresh", now=NOW)

    assert claims.token_type == "refresh"
    assert claims.expires_at == NOW + REFRESH_TTL
    assert claims.fresh is False
    assert claims.roles == ()
    assert "roles" not in claims.raw


def test_every_token_gets_its_own_jti(token_settings: TokenSettings) -> None:
    first = encode_token(token_settings, subject="user-1", token_type="access", now=NOW)
    second = encode_token(token_settings, subject="user-1", token_type="access", now=NOW)

    assert first.jti != second.jti
    assert first.token != second.token


def test_hmac_kid_is_thumbprint_of_the_secret_jwk(secret: bytes, key: SigningKey) -> None:
    assert key.kid == rfc7638_thumbprint({"kty": "oct", "k": b64url(secret)})
    assert key.kid != SigningKey.hmac("HS256", secrets.token_bytes(48)).kid
    assert key.public_jwk is None


# --- time ---------------------------------------------------------------------------------------


def test_expired_token_past_leeway_is_refused(token_settings: TokenSettings) -> None:
    token = access_token(token_settings)

    with pytest.raises(TokenExpired):
        decode_token(
            token_settings, token, expected_type="access", now=NOW + ACCESS_TTL + LEEWAY + 1
        )


@pytest.mark.parametrize("late", [0, 1, LEEWAY - 1])
def test_token_within_leeway_after_expiry_is_accepted(
    token_settings: TokenSettings, late: int
) -> None:
    token = access_token(token_settings)

    claims = decode_token(
        token_settings, token, expected_type="access", now=NOW + ACCESS_TTL + late
    )

    assert claims.subject == "user-1"


def test_token_issued_in_the_future_beyond_leeway_is_refused(
    token_settings: TokenSettings,
) -> None:
    token = access_token(token_settings, now=NOW + LEEWAY + 1)

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


@pytest.mark.parametrize("nbf", [None, NOW])
def test_hand_built_token_issued_in_the_future_is_refused_whatever_its_nbf(
    token_settings: TokenSettings, secret: bytes, key: SigningKey, nbf: int | None
) -> None:
    claims = valid_claims(iat=NOW + LEEWAY + 1)
    if nbf is None:
        del claims["nbf"]
    else:
        claims["nbf"] = nbf
    token = sign_hs256(claims, secret, key.kid)

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


def test_token_issued_in_the_future_within_leeway_is_accepted(
    token_settings: TokenSettings,
) -> None:
    token = access_token(token_settings, now=NOW + LEEWAY)

    assert decode_token(token_settings, token, expected_type="access", now=NOW).subject == "user-1"


def test_not_before_in_the_future_beyond_leeway_is_refused(
    token_settings: TokenSettings, secret: bytes, key: SigningKey
) -> None:
    token = sign_hs256(valid_claims(nbf=NOW + LEEWAY + 1), secret, key.kid)

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


def test_not_before_within_leeway_is_accepted(
    token_settings: TokenSettings, secret: bytes, key: SigningKey
) -> None:
    token = sign_hs256(valid_claims(nbf=NOW + LEEWAY), secret, key.kid)

    assert decode_token(token_settings, token, expected_type="access", now=NOW).subject


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", ["1800000000", True, None, [NOW]])
def test_non_numeric_time_claim_is_refused(
    token_settings: TokenSettings, secret: bytes, key: SigningKey, claim: str, value: Any
) -> None:
    claims = valid_claims(**{claim: value})
    if value is None and claim == "nbf":
        # An explicit null nbf is treated as absent; an absent nbf is allowed.
        token = sign_hs256(claims, secret, key.kid)
        assert decode_token(token_settings, token, expected_type="access", now=NOW).subject
        return
    token = sign_hs256(claims, secret, key.kid)

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


# --- signature ---------------------------------------------------------------------------------


def test_token_signed_with_another_secret_is_refused(
    token_settings: TokenSettings, key: SigningKey
) -> None:
    token = sign_hs256(valid_claims(), secrets.token_bytes(48), key.kid)

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


def test_tampered_payload_with_the_old_signature_is_refused(
    token_settings: TokenSettings,
) -> None:
    header, payload, signature = access_token(token_settings).split(".")
    claims = json.loads(b64url_decode(payload))
    claims["sub"] = "someone-else"
    claims["roles"] = ["admin"]
    tampered = f"{header}.{b64url_json(claims)}.{signature}"

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, tampered, expected_type="access", now=NOW)


@pytest.mark.parametrize("keep", [0, 1, 10, 42])
def test_truncated_signature_is_refused(token_settings: TokenSettings, keep: int) -> None:
    header, payload, signature = access_token(token_settings).split(".")
    assert len(signature) == 43

    with pytest.raises(TokenInvalid):
        decode_token(
            token_settings,
            f"{header}.{payload}.{signature[:keep]}",
            expected_type="access",
            now=NOW,
        )


@pytest.mark.parametrize("algorithm", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("with_kid", [True, False])
def test_unsigned_alg_none_token_is_refused(
    token_settings: TokenSettings, key: SigningKey, algorithm: str, with_kid: bool
) -> None:
    header: dict[str, Any] = {"alg": algorithm, "typ": "JWT"}
    if with_kid:
        header["kid"] = key.kid
    token = f"{b64url_json(header)}.{b64url_json(valid_claims())}."

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_token_signed_with_hs512_when_hs256_is_configured_is_refused(
    token_settings: TokenSettings, secret: bytes, key: SigningKey
) -> None:
    token = jwt.encode(valid_claims(), secret, algorithm="HS512", headers={"kid": key.kid})

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


def test_hand_built_token_with_the_right_secret_is_accepted(
    token_settings: TokenSettings, secret: bytes, key: SigningKey
) -> None:
    # The control for the hand-built tokens below: only the one change makes them fail.
    token = sign_hs256(valid_claims(), secret, key.kid)

    claims = decode_token(token_settings, token, expected_type="access", now=NOW)

    assert claims.subject == valid_claims()["sub"]


def test_unknown_kid_is_refused(token_settings: TokenSettings, secret: bytes) -> None:
    token = sign_hs256(valid_claims(), secret, "some-other-kid")

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


@pytest.mark.parametrize(
    "extension",
    [
        {"crit": ["x-policy"], "x-policy": "a"},
        # PyJWT itself understands RFC 7797 "b64"; this service understands no extension.
        {"crit": ["b64"], "b64": True},
        {"crit": []},
        {"crit": "x-policy"},
    ],
)
def test_critical_header_extension_is_refused(
    token_settings: TokenSettings, secret: bytes, key: SigningKey, extension: dict[str, Any]
) -> None:
    header = b64url_json({"alg": "HS256", "typ": "JWT", "kid": key.kid, **extension})
    signing_input = f"{header}.{b64url_json(valid_claims())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(signature)}"

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


def test_embedded_jwk_of_an_attacker_hmac_key_is_ignored(
    token_settings: TokenSettings, key: SigningKey
) -> None:
    attacker_secret = secrets.token_bytes(48)
    attacker_jwk = {"kty": "oct", "k": b64url(attacker_secret)}
    token = sign_hs256(valid_claims(), attacker_secret, key.kid, jwk=attacker_jwk)

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


@pytest.mark.parametrize("use_attacker_kid", [True, False])
def test_embedded_jwk_of_an_attacker_rsa_key_is_ignored(
    token_settings: TokenSettings, key: SigningKey, use_attacker_kid: bool
) -> None:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker_jwk: dict[str, Any] = json.loads(
        jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key())
    )
    kid = rfc7638_thumbprint(attacker_jwk) if use_attacker_kid else key.kid
    token = jwt.encode(
        valid_claims(),
        attacker,
        algorithm="RS256",
        headers={"kid": kid, "jwk": attacker_jwk, "jku": "https://attacker.example/jwks.json"},
    )

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


def test_jku_header_pointing_elsewhere_is_ignored(
    token_settings: TokenSettings, key: SigningKey
) -> None:
    token = sign_hs256(
        valid_claims(),
        secrets.token_bytes(48),
        key.kid,
        jku="https://attacker.example/jwks.json",
        x5u="https://attacker.example/cert.pem",
    )

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


# --- token type ---------------------------------------------------------------------------------


def test_refresh_token_where_access_is_expected_is_wrong_type(
    token_settings: TokenSettings,
) -> None:
    token = encode_token(token_settings, subject="user-1", token_type="refresh", now=NOW).token

    with pytest.raises(WrongTokenType):
        decode_token(token_settings, token, expected_type="access", now=NOW)


def test_access_token_where_refresh_is_expected_is_wrong_type(
    token_settings: TokenSettings,
) -> None:
    token = access_token(token_settings)

    with pytest.raises(WrongTokenType):
        decode_token(token_settings, token, expected_type="refresh", now=NOW)


@pytest.mark.parametrize("token_type", ["id", "Access", "", 1])
def test_unknown_token_type_is_refused(
    token_settings: TokenSettings, secret: bytes, key: SigningKey, token_type: Any
) -> None:
    token = sign_hs256(valid_claims(type=token_type), secret, key.kid)

    with pytest.raises(TokenInvalid) as caught:
        decode_token(token_settings, token, expected_type="access", now=NOW)
    assert not isinstance(caught.value, WrongTokenType)


# --- claims -------------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", DOCUMENTED_REQUIRED_CLAIMS)
def test_missing_required_claim_is_refused(
    token_settings: TokenSettings, secret: bytes, key: SigningKey, claim: str
) -> None:
    claims = valid_claims()
    del claims[claim]
    token = sign_hs256(claims, secret, key.kid)

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


def test_required_claims_are_the_documented_ones(
    token_settings: TokenSettings, secret: bytes, key: SigningKey
) -> None:
    # Each documented claim is required (the test above); no other one is: a token carrying only
    # these is accepted.
    only_required = {name: valid_claims()[name] for name in DOCUMENTED_REQUIRED_CLAIMS}
    token = sign_hs256(only_required, secret, key.kid)

    claims = decode_token(token_settings, token, expected_type="access", now=NOW)

    assert claims.subject == only_required["sub"]
    assert claims.token_type == "access"
    assert claims.roles == ()


@pytest.mark.parametrize(
    "issuer",
    ["someone-else", ISSUER[:-1], ISSUER[1:], "auth", "", ISSUER.upper(), ISSUER + " "],
)
def test_wrong_issuer_is_refused(
    token_settings: TokenSettings, secret: bytes, key: SigningKey, issuer: str
) -> None:
    token = sign_hs256(valid_claims(iss=issuer), secret, key.kid)

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


@pytest.mark.parametrize(
    "audience",
    ["someone-else", AUDIENCE[:-1], "", [AUDIENCE], [AUDIENCE, "other"], ["other"]],
)
def test_wrong_audience_is_refused(
    token_settings: TokenSettings, secret: bytes, key: SigningKey, audience: Any
) -> None:
    token = sign_hs256(valid_claims(aud=audience), secret, key.kid)

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


@pytest.mark.parametrize(
    ("claim", "value"),
    [("sub", 42), ("sub", None), ("jti", 7), ("roles", "admin"), ("roles", ["admin", 1])],
)
def test_claim_of_the_wrong_json_type_is_refused(
    token_settings: TokenSettings, secret: bytes, key: SigningKey, claim: str, value: Any
) -> None:
    token = sign_hs256(valid_claims(**{claim: value}), secret, key.kid)

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


def test_fresh_is_only_true_for_boolean_true(
    token_settings: TokenSettings, secret: bytes, key: SigningKey
) -> None:
    token = sign_hs256(valid_claims(fresh="true"), secret, key.kid)

    assert decode_token(token_settings, token, expected_type="access", now=NOW).fresh is False


# --- shape --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "aaaa.bbbb",
        "aaaa.bbbb.cccc.dddd",
        "aaaa.bbbb.cccc.dddd.eeee",
        "!!!.@@@.###",
        "....",
        "..",
        "e30.e30.",
        "\u00e9\u00e9.\u00e9\u00e9.\u00e9\u00e9",
    ],
)
def test_malformed_token_is_refused(token_settings: TokenSettings, token: str) -> None:
    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token, expected_type="access", now=NOW)


@pytest.mark.parametrize("extra_segments", [".", ".x", ".x.y"])
def test_valid_token_with_extra_segments_is_refused(
    token_settings: TokenSettings, extra_segments: str
) -> None:
    token = access_token(token_settings)

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, token + extra_segments, expected_type="access", now=NOW)


def test_two_segment_prefix_of_a_valid_token_is_refused(token_settings: TokenSettings) -> None:
    header, payload, _ = access_token(token_settings).split(".")

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, f"{header}.{payload}", expected_type="access", now=NOW)


def test_validly_signed_token_over_8_kb_is_refused(token_settings: TokenSettings) -> None:
    def with_padding(size: int) -> str:
        return encode_token(
            token_settings,
            subject="user-1",
            token_type="access",
            now=NOW,
            extra_claims={"padding": "x" * size},
        ).token

    small = with_padding(1000)
    assert decode_token(token_settings, small, expected_type="access", now=NOW).subject
    large = with_padding(MAX_TOKEN_LENGTH)
    assert len(large) > 8 * 1024

    with pytest.raises(TokenInvalid):
        decode_token(token_settings, large, expected_type="access", now=NOW)


def test_extra_claims_cannot_override_reserved_claims(token_settings: TokenSettings) -> None:
    issued = encode_token(
        token_settings,
        subject="user-1",
        token_type="access",
        now=NOW,
        extra_claims={"sub": "admin", "type": "refresh", "aud": "other", "exp": NOW + 10**9},
    )

    claims = decode_token(token_settings, issued.token, expected_type="access", now=NOW)

    assert claims.subject == "user-1"
    assert claims.expires_at == NOW + ACCESS_TTL


# --- keys ---------------------------------------------------------------------------------------


def test_rfc7638_thumbprint_of_the_rfc_example_key() -> None:
    assert rfc7638_thumbprint(RFC7638_EXAMPLE_KEY) == RFC7638_EXAMPLE_THUMBPRINT


def test_rfc7638_thumbprint_ignores_optional_members_and_their_order() -> None:
    reordered = dict(reversed(list(RFC7638_EXAMPLE_KEY.items())))
    bare = {name: RFC7638_EXAMPLE_KEY[name] for name in ("e", "kty", "n")}

    assert rfc7638_thumbprint(reordered) == RFC7638_EXAMPLE_THUMBPRINT
    assert rfc7638_thumbprint(bare) == RFC7638_EXAMPLE_THUMBPRINT
    assert rfc7638_thumbprint({**bare, "e": "AQAC"}) != RFC7638_EXAMPLE_THUMBPRINT


def test_token_of_a_previous_key_verifies_only_while_that_key_is_listed() -> None:
    old_key = SigningKey.hmac("HS256", secrets.token_bytes(48))
    new_key = SigningKey.hmac("HS256", secrets.token_bytes(48))
    token = access_token(make_token_settings(old_key))

    rotated = make_token_settings(new_key, previous_keys=(old_key,))
    assert decode_token(rotated, token, expected_type="access", now=NOW).subject == "user-1"
    new_token = access_token(rotated)
    assert jwt.get_unverified_header(new_token)["kid"] == new_key.kid
    assert decode_token(rotated, new_token, expected_type="access", now=NOW).subject == "user-1"

    retired = make_token_settings(new_key)
    with pytest.raises(TokenInvalid):
        decode_token(retired, token, expected_type="access", now=NOW)


def test_token_without_kid_is_refused_when_several_keys_are_configured() -> None:
    old_secret = secrets.token_bytes(48)
    old_key = SigningKey.hmac("HS256", old_secret)
    rotated = make_token_settings(
        SigningKey.hmac("HS256", secrets.token_bytes(48)), previous_keys=(old_key,)
    )
    token = jwt.encode(valid_claims(), old_secret, algorithm="HS256")

    with pytest.raises(TokenInvalid):
        decode_token(rotated, token, expected_type="access", now=NOW)


def _private_pem(private_key: Any) -> bytes:
    pem: bytes = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    return pem


def _public_pem(private_key: Any) -> bytes:
    pem: bytes = private_key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return pem


ASYMMETRIC_KEYS: list[tuple[str, Any, set[str]]] = [
    ("RS256", lambda: rsa.generate_private_key(65537, 2048), {"kty", "n", "e"}),
    ("ES256", lambda: ec.generate_private_key(ec.SECP256R1()), {"kty", "crv", "x", "y"}),
    ("EdDSA", ed25519.Ed25519PrivateKey.generate, {"kty", "crv", "x"}),
]


@pytest.mark.parametrize(("algorithm", "generate", "public_members"), ASYMMETRIC_KEYS)
def test_asymmetric_key_round_trip_and_public_jwk(
    algorithm: str, generate: Any, public_members: set[str]
) -> None:
    private_key = generate()
    key = SigningKey.from_private_pem(algorithm, _private_pem(private_key))
    settings = make_token_settings(key)

    issued = encode_token(settings, subject="user-1", token_type="access", now=NOW, roles=["r"])
    claims = decode_token(settings, issued.token, expected_type="access", now=NOW)

    assert claims.subject == "user-1"
    assert claims.roles == ("r",)
    assert jwt.get_unverified_header(issued.token) == {
        "alg": algorithm,
        "typ": "JWT",
        "kid": key.kid,
    }
    jwk = key.public_jwk
    assert jwk is not None
    assert jwk["kid"] == key.kid == rfc7638_thumbprint(jwk)
    assert jwk["alg"] == algorithm
    assert jwk["use"] == "sig"
    # RFC 7517 §4.3: "use" and "key_ops" should not appear together.
    assert "key_ops" not in jwk
    assert set(jwk) == public_members | {"kid", "alg", "use"}
    assert not PRIVATE_JWK_MEMBERS & set(jwk)
    # A verifier holding only the published JWK accepts the token.
    published = jwt.PyJWK(jwk)
    verified = jwt.decode(
        issued.token,
        published.key,
        algorithms=[algorithm],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert verified["jti"] == issued.jti


@pytest.mark.parametrize(("algorithm", "generate", "public_members"), ASYMMETRIC_KEYS)
def test_asymmetric_key_refuses_token_of_another_key_with_its_kid(
    algorithm: str, generate: Any, public_members: set[str]
) -> None:
    key = SigningKey.from_private_pem(algorithm, _private_pem(generate()))
    attacker = SigningKey.from_private_pem(algorithm, _private_pem(generate()))
    forged = jwt.encode(
        valid_claims(), attacker.signing, algorithm=algorithm, headers={"kid": key.kid}
    )

    with pytest.raises(TokenInvalid):
        decode_token(make_token_settings(key), forged, expected_type="access", now=NOW)


def test_rs256_public_key_used_as_hmac_secret_is_refused() -> None:
    private_key = rsa.generate_private_key(65537, 2048)
    key = SigningKey.from_private_pem("RS256", _private_pem(private_key))
    header = b64url_json({"alg": "HS256", "typ": "JWT", "kid": key.kid})
    payload = b64url_json(valid_claims())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(_public_pem(private_key), signing_input, hashlib.sha256).digest()
    forged = f"{header}.{payload}.{b64url(signature)}"

    with pytest.raises(TokenInvalid):
        decode_token(make_token_settings(key), forged, expected_type="access", now=NOW)


# --- verified tokens, remembered --------------------------------------------------------------


def _count_signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return original(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return calls


def test_decode_token_alone_remembers_nothing(
    token_settings: TokenSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = access_token(token_settings)
    checks = _count_signature_checks(monkeypatch)

    decode_token(token_settings, token, expected_type="access", now=NOW)
    decode_token(token_settings, token, expected_type="access", now=NOW)

    assert checks == [token, token]


def test_a_token_seen_before_is_not_verified_again(
    token_settings: TokenSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = TokenVerifier(token_settings)
    token = access_token(token_settings)
    checks = _count_signature_checks(monkeypatch)

    first = verifier.decode(token, expected_type="access", now=NOW)
    again = [verifier.decode(token, expected_type="access", now=NOW + 60)]

    assert checks == [token]
    assert again == [first]
    assert len(verifier.verified) == 1


def test_a_remembered_token_still_expires(token_settings: TokenSettings) -> None:
    verifier = TokenVerifier(token_settings)
    token = access_token(token_settings)
    verifier.decode(token, expected_type="access", now=NOW)

    with pytest.raises(TokenExpired):
        verifier.decode(token, expected_type="access", now=NOW + ACCESS_TTL + LEEWAY)
    assert len(verifier.verified) == 0


def test_a_remembered_token_keeps_its_type(token_settings: TokenSettings) -> None:
    verifier = TokenVerifier(token_settings)
    refresh = encode_token(token_settings, subject="u", token_type="refresh", now=NOW).token
    verifier.decode(refresh, expected_type="refresh", now=NOW)

    with pytest.raises(WrongTokenType):
        verifier.decode(refresh, expected_type="access", now=NOW)


def test_a_token_not_yet_valid_is_refused_until_its_time(token_settings: TokenSettings) -> None:
    verifier = TokenVerifier(token_settings)
    early = access_token(token_settings, now=NOW + 600)

    with pytest.raises(TokenInvalid):
        verifier.decode(early, expected_type="access", now=NOW)
    assert len(verifier.verified) == 0
    assert verifier.decode(early, expected_type="access", now=NOW + 600).subject


def test_a_token_that_fails_is_not_remembered(
    token_settings: TokenSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = TokenVerifier(token_settings)
    token = access_token(token_settings)
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    checks = _count_signature_checks(monkeypatch)

    for _ in range(2):
        with pytest.raises(TokenInvalid):
            verifier.decode(tampered, expected_type="access", now=NOW)

    assert checks == [tampered, tampered]
    assert len(verifier.verified) == 0


def test_a_verifier_for_other_keys_remembers_nothing_of_the_old_ones(
    token_settings: TokenSettings,
) -> None:
    token = access_token(token_settings)
    TokenVerifier(token_settings).decode(token, expected_type="access", now=NOW)
    rotated = TokenVerifier(
        replace(token_settings, key=SigningKey.hmac("HS256", secrets.token_bytes(48)))
    )

    assert len(rotated.verified) == 0
    with pytest.raises(TokenInvalid):
        rotated.decode(token, expected_type="access", now=NOW)


def test_remembered_tokens_are_bounded_least_recently_used_first(
    token_settings: TokenSettings,
) -> None:
    verifier = TokenVerifier(token_settings, max_entries=3)
    tokens = [access_token(token_settings, now=NOW + i) for i in range(4)]
    for token in tokens[:3]:
        verifier.decode(token, expected_type="access", now=NOW + 10)
    verifier.decode(tokens[0], expected_type="access", now=NOW + 10)  # used again
    verifier.decode(tokens[3], expected_type="access", now=NOW + 10)

    assert len(verifier.verified) == 3
    assert verifier.verified.get(tokens[1]) is None
    assert all(verifier.verified.get(t) is not None for t in (tokens[0], tokens[2], tokens[3]))


def test_remembered_claims_cannot_be_changed_by_one_request_for_the_next(
    token_settings: TokenSettings,
) -> None:
    verifier = TokenVerifier(token_settings)
    token = access_token(token_settings)
    claims = verifier.decode(token, expected_type="access", now=NOW)

    with pytest.raises(TypeError):
        claims.raw["sub"] = "someone-else"  # type: ignore[index]
    assert verifier.decode(token, expected_type="access", now=NOW).raw["sub"] == "user-1"
