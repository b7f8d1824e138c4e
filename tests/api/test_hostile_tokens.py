"""RFC 8725 attacks through HTTP: every forged or broken token is a 401 problem, never a 5xx."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from quart import Quart

from service.web.state import get_state
from tests.support import SettingsFactory, bearer, make_settings, running_app, signup_and_login

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

SECRET = "a-test-secret-that-is-long-enough-for-hs256!!"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(data: dict[str, Any]) -> str:
    return b64(json.dumps(data).encode())


@pytest.fixture
async def target(
    settings_factory: SettingsFactory,
) -> AsyncIterator[tuple[Quart, dict[str, Any], dict[str, Any]]]:
    async with running_app(settings_factory(jwt_secret=SECRET)) as app:
        pair = await signup_and_login(app.test_client())
        claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
        header = jwt.get_unverified_header(pair["access_token"])
        yield app, claims, header


Forge = Callable[[dict[str, Any], dict[str, Any]], str]


def signed(claims: dict[str, Any], header: dict[str, Any], key: str = SECRET, **kw: Any) -> str:
    return jwt.encode(claims, key, algorithm=kw.pop("alg", "HS256"), headers=header)


def drop(name: str) -> Forge:
    return lambda c, h: signed({k: v for k, v in c.items() if k != name}, h)


def change(**values: Any) -> Forge:
    return lambda c, h: signed({**c, **values}, h)


def issued_plus(**offsets: int) -> Forge:
    """Time claims set relative to when the real token was issued (at the test's start): a
    time taken at import would be stale by the time a long run reaches the test."""
    return lambda c, h: signed({**c, **{k: c["iat"] + v for k, v in offsets.items()}}, h)


def none_alg(case: str) -> Forge:
    return lambda c, h: f"{segment({**h, 'alg': case})}.{segment(c)}."


def with_header(**values: Any) -> Forge:
    return lambda c, h: signed(c, {**h, **values})


def attacker_jwk(c: dict[str, Any], h: dict[str, Any]) -> str:
    """Signed with the attacker's own EC key, which the header offers as a ``jwk``."""
    key = ec.generate_private_key(ec.SECP256R1())
    algorithm = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)
    jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
    signing_input = f"{segment({**h, 'alg': 'ES256', 'jwk': jwk})}.{segment(c)}"
    return f"{signing_input}.{b64(algorithm.sign(signing_input.encode(), key))}"


def tampered(c: dict[str, Any], h: dict[str, Any]) -> str:
    token = signed(c, h)
    head, _, sig = token.split(".")
    return f"{head}.{segment({**c, 'roles': ['admin']})}.{sig}"


def truncated(c: dict[str, Any], h: dict[str, Any]) -> str:
    return signed(c, h)[:-6]


FORGERIES: dict[str, Forge] = {
    **{f"alg {case}": none_alg(case) for case in ("none", "None", "NONE", "nOnE")},
    "empty key": lambda c, h: hmac_token(c, b"", h["kid"]),
    "common key": lambda c, h: signed(c, h, key="secret"),
    "wrong key": lambda c, h: signed(c, h, key="x" * 48),
    "tampered payload": tampered,
    "truncated signature": truncated,
    "HS512 instead of HS256": lambda c, h: signed(c, {**h, "alg": "HS512"}, alg="HS512"),
    "key in the jwk header": attacker_jwk,
    "attacker key named by jku": lambda c, h: signed(
        c, {**h, "jku": "http://127.0.0.1:9/k"}, "y" * 48
    ),
    "attacker key named by x5u": lambda c, h: signed(
        c, {**h, "x5u": "http://127.0.0.1:9/c"}, "y" * 48
    ),
    "kid path traversal": with_header(kid="../../../../etc/passwd"),
    "kid sql": with_header(kid="' OR '1'='1' --"),
    "kid shell": with_header(kid="$(sleep 5); `sleep 5`"),
    "unknown crit": with_header(crit=["exp-ext"], **{"exp-ext": True}),
    "expired": issued_plus(exp=-3600, iat=-7200, nbf=-7200),
    "nbf in the future": issued_plus(nbf=600),
    "iat in the future": issued_plus(iat=600),
    "wrong aud": change(aud="another-service"),
    "aud list without ours": change(aud=["a", "b"]),
    "wrong iss": change(iss="evil"),
    "iss substring": change(iss="auth"),
    "sub of nobody": change(sub=str(uuid.uuid4())),
    "sub not a uuid": change(sub="1 OR 1=1"),
    **{
        f"missing {name}": drop(name) for name in ("exp", "iat", "sub", "jti", "type", "iss", "aud")
    },
    "type refresh": change(type="refresh"),
    "type other": change(type="id"),
    "2 segments": lambda c, h: ".".join(signed(c, h).split(".")[:2]),
    "4 segments": lambda c, h: signed(c, h) + ".x",
    "5 segments": lambda c, h: signed(c, h) + ".x.y",
    "not base64": lambda c, h: "###.%%%.$$$",
    "8 KB token": change(padding="p" * 8192),
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
async def test_forged_and_broken_tokens_are_401(
    target: tuple[Quart, dict[str, Any], dict[str, Any]], name: str
) -> None:
    app, claims, header = target
    token = FORGERIES[name](dict(claims), dict(header))

    response = await app.test_client().get("/me", headers=bearer(token))

    assert response.status_code == 401, (name, await response.get_data(as_text=True))
    assert response.content_type == "application/problem+json"
    body = await response.get_json()
    assert body["code"] in {"TOKEN_INVALID", "TOKEN_EXPIRED", "WRONG_TOKEN_TYPE"}
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_keys_named_in_the_header_are_never_fetched(
    target: tuple[Quart, dict[str, Any], dict[str, Any]],
) -> None:
    app, claims, header = target
    hits: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hits.append(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for name in ("jku", "x5u"):
            token = signed(claims, {**header, name: f"http://127.0.0.1:{port}/key"}, "z" * 48)
            response = await app.test_client().get("/me", headers=bearer(token))
            assert response.status_code == 401
        await asyncio.sleep(0.1)
    finally:
        server.close()
        await server.wait_closed()

    assert hits == []


async def test_hs256_signed_with_the_public_key_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "signing.pem"
    private = ec.generate_private_key(ec.SECP256R1())
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = make_settings(tmp_path, jwt_algorithm="ES256", jwt_private_key_file=key_file)
    async with running_app(settings) as app:
        client = app.test_client()
        pair = await signup_and_login(client)
        claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
        kid = get_state(app).accounts.tokens.key.kid
        forged = hmac_token(claims, public_pem, kid)
        genuine = await client.get("/me", headers=bearer(pair["access_token"]))
        response = await client.get("/me", headers=bearer(forged))

    assert genuine.status_code == 200
    assert response.status_code == 401
    assert (await response.get_json())["code"] == "TOKEN_INVALID"


def hmac_token(claims: dict[str, Any], key: bytes, kid: str) -> str:
    """HS256 built by hand: PyJWT refuses empty and PEM keys for HMAC."""
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{segment(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, 10**400], ids=["NaN", "Infinity", "-Infinity", "1e400"]
)
async def test_a_time_claim_that_names_no_time_is_token_invalid(
    target: tuple[Quart, dict[str, Any], dict[str, Any]], claim: str, value: float
) -> None:
    app, claims, header = target
    token = signed({**claims, claim: value}, header)  # json.dumps writes NaN, Infinity

    response = await app.test_client().get("/me", headers=bearer(token))

    assert response.status_code == 401, await response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    assert (await response.get_json())["code"] == "TOKEN_INVALID"


async def test_a_token_sharing_a_cached_tokens_jti_is_answered_for_its_own_subject(
    settings_factory: SettingsFactory,
) -> None:
    async with running_app(settings_factory(jwt_secret=SECRET)) as app:
        client = app.test_client()
        alice = await signup_and_login(client, "alice")
        bob = await signup_and_login(client, "bobby")
        alice_claims = jwt.decode(alice["access_token"], options={"verify_signature": False})
        bob_claims = jwt.decode(bob["access_token"], options={"verify_signature": False})
        header = jwt.get_unverified_header(alice["access_token"])
        # Bob's own claims, signed correctly, but carrying the jti of Alice's live token.
        bobs_with_alices_jti = signed({**bob_claims, "jti": alice_claims["jti"]}, header)
        # Alice's claims with Bob's sub: her session is not his, so no user is answered.
        alices_with_bobs_sub = signed({**alice_claims, "sub": bob_claims["sub"]}, header)

        first = await client.get("/me", headers=bearer(alice["access_token"]))  # now cached
        shared_jti = await client.get("/me", headers=bearer(bobs_with_alices_jti))
        other_sub = await client.get("/me", headers=bearer(alices_with_bobs_sub))

    assert (await first.get_json())["id"] == alice_claims["sub"]
    assert shared_jti.status_code == 200
    assert (await shared_jti.get_json())["id"] == bob_claims["sub"]
    assert other_sub.status_code == 401
    assert (await other_sub.get_json())["code"] == "TOKEN_REVOKED"
