"""Resource-server mode without processes: the JWK Set a resource server accepts, and how its
key cache fetches (once, shared, at most once per interval for an unknown kid)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import jwt
import pytest

from service.accounts.resource_server import KeysUnavailable, RemoteKeys
from service.core.errors import TokenExpired, TokenInvalid
from service.core.keys import generate_private_key_pem, jwks, key_from_pem, keys_from_jwks
from service.core.tokens import SigningKey, TokenSettings, encode_token

ISSUER = AUDIENCE = "auth-service"


def signing_key(algorithm: str = "ES256") -> SigningKey:
    return key_from_pem(algorithm, generate_private_key_pem(algorithm))


def token_settings(key: SigningKey, *previous: SigningKey) -> TokenSettings:
    return TokenSettings(
        key=key,
        issuer=ISSUER,
        audience=AUDIENCE,
        access_ttl=900,
        refresh_ttl=3600,
        previous_keys=previous,
    )


def access_token(key: SigningKey, **overrides: Any) -> str:
    return encode_token(
        token_settings(key),
        subject=str(uuid.uuid4()),
        token_type="access",
        extra_claims={"sid": str(uuid.uuid4()), "ver": 0},
        **overrides,
    ).token


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_the_services_own_jwks_gives_back_its_verifying_keys(algorithm: str) -> None:
    current, previous = signing_key(algorithm), signing_key(algorithm)
    keys = keys_from_jwks(jwks(token_settings(current, previous)))
    assert [key.kid for key in keys] == [current.kid, previous.kid]
    assert [key.algorithm for key in keys] == [algorithm, algorithm]
    assert all(key.signing is None for key in keys)


def test_entries_a_resource_server_must_not_trust_are_skipped() -> None:
    good = signing_key()
    published = jwks(token_settings(good))["keys"][0]
    hostile = [
        {**published, "alg": "HS256"},  # a public key offered as an HMAC secret
        {**published, "alg": "RS256"},  # an EC key labelled RSA
        {**published, "alg": "none"},
        {**published, "use": "enc"},
        {key: value for key, value in published.items() if key != "kid"},
        {**published, "kid": ""},
        {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "shared"},
        {**published, "x": "not base64 at all!"},
        "not an object",
        {**published, "d": "private part published by mistake"},
    ]
    keys = keys_from_jwks({"keys": [*hostile, published]})
    assert [key.kid for key in keys] == [good.kid]


@pytest.mark.parametrize("document", [None, [], {}, {"keys": "none"}, "text"])
def test_a_document_that_is_no_jwk_set_is_a_value_error(document: object) -> None:
    with pytest.raises(ValueError, match="not a JWK Set"):
        keys_from_jwks(document)


class FakeService:
    """The service's JWKS endpoint, answering from ``keys``; counts the fetches."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.down = False
        self.gate: asyncio.Event | None = None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        document = jwks(token_settings(self.keys[0], *self.keys[1:]))
        return httpx.Response(200, content=json.dumps(document))

    def remote_keys(self, *, min_refetch_seconds: float = 0.0) -> RemoteKeys:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))
        return RemoteKeys(
            "http://auth.test/.well-known/jwks.json",
            http,
            issuer=ISSUER,
            audience=AUDIENCE,
            leeway=30,
            cache_seconds=300,
            min_refetch_seconds=min_refetch_seconds,
        )


async def verify(keys: RemoteKeys, token: str) -> str:
    verifier = await keys.verifier_for(token)
    return verifier.decode(token, expected_type="access").subject


async def test_concurrent_first_requests_share_one_fetch() -> None:
    key = signing_key()
    service = FakeService(key)
    service.gate = asyncio.Event()
    keys = service.remote_keys()
    tokens = [access_token(key) for _ in range(20)]
    pending = [asyncio.ensure_future(verify(keys, token)) for token in tokens]
    await asyncio.sleep(0)
    service.gate.set()
    subjects = await asyncio.gather(*pending)
    assert subjects == [jwt.decode(t, options={"verify_signature": False})["sub"] for t in tokens]
    assert service.fetches == 1


async def test_a_new_kid_is_fetched_once_and_then_verifies() -> None:
    old, new = signing_key(), signing_key()
    service = FakeService(old)
    keys = service.remote_keys()
    await verify(keys, access_token(old))
    service.keys = [new, old]  # the service rotated
    rotated = [access_token(new) for _ in range(10)]
    await asyncio.gather(*(verify(keys, token) for token in rotated))
    await verify(keys, access_token(old))
    assert service.fetches == 2


async def test_an_unknown_kid_fetches_at_most_once_per_interval() -> None:
    key = signing_key()
    service = FakeService(key)
    keys = service.remote_keys(min_refetch_seconds=3600)
    await verify(keys, access_token(key))
    stranger = signing_key()
    for _ in range(5):
        with pytest.raises(TokenInvalid):
            await verify(keys, access_token(stranger))
    assert service.fetches == 1


async def test_no_keys_ever_fetched_is_keys_unavailable_not_a_verdict_on_the_token() -> None:
    key = signing_key()
    service = FakeService(key)
    service.down = True
    keys = service.remote_keys()
    with pytest.raises(KeysUnavailable) as refused:
        await verify(keys, access_token(key))
    assert refused.value.status == 503
    assert refused.value.headers()["Retry-After"] == "5"


async def test_a_service_that_went_away_keeps_known_keys_and_cannot_vouch_for_new_ones() -> None:
    key = signing_key()
    service = FakeService(key)
    keys = service.remote_keys()
    token = access_token(key)
    await verify(keys, token)
    service.down = True
    assert await verify(keys, token)  # the cached key still verifies what it signed
    with pytest.raises(KeysUnavailable):
        await verify(keys, access_token(signing_key()))


async def test_a_withdrawn_key_stops_verifying_once_the_set_is_fetched_again() -> None:
    old, new = signing_key(), signing_key()
    service = FakeService(old)
    keys = service.remote_keys()
    old_token = access_token(old)
    await verify(keys, old_token)
    service.keys = [new]  # rotated, and the old key no longer published
    await verify(keys, access_token(new))
    with pytest.raises(TokenInvalid):
        await verify(keys, old_token)


async def test_claims_are_checked_as_the_service_checks_them() -> None:
    key = signing_key()
    keys = FakeService(key).remote_keys()
    expired = access_token(key, now=1_000_000)
    with pytest.raises(TokenExpired):
        await verify(keys, expired)
    other_audience = encode_token(
        TokenSettings(key=key, issuer=ISSUER, audience="billing", access_ttl=900, refresh_ttl=0),
        subject="x",
        token_type="access",
    ).token
    with pytest.raises(TokenInvalid):
        await verify(keys, other_audience)
