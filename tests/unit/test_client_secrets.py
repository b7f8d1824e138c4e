"""Client secrets and scopes as pure functions: SHA-256 kept, constant-time compare, scope sets."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from service.accounts.clients import (
    DUMMY_SECRET_HASH,
    ClientRecord,
    granted_scopes,
    hash_secret,
    new_client_id,
    new_client_secret,
    scope_problem,
    secret_matches,
)
from service.core.errors import OAuthError

REPORTING = ClientRecord(
    client_id="abc",
    name="reporting",
    scopes=("reports:read", "reports:write"),
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
)


def test_the_kept_hash_is_the_secrets_sha256() -> None:
    assert hash_secret("s3cret") == hashlib.sha256(b"s3cret").hexdigest()


def test_a_secret_matches_its_hash_only() -> None:
    secret = new_client_secret()

    assert secret_matches(secret, hash_secret(secret)) is True
    assert secret_matches(secret + "x", hash_secret(secret)) is False
    assert secret_matches("", hash_secret(secret)) is False


def test_secrets_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    assert secret_matches("guess", DUMMY_SECRET_HASH) is False
    assert compared == [(hash_secret("guess").encode(), DUMMY_SECRET_HASH.encode())]


def test_the_dummy_hash_has_the_shape_of_a_real_one() -> None:
    assert len(DUMMY_SECRET_HASH) == len(hash_secret(new_client_secret())) == 64
    assert int(DUMMY_SECRET_HASH, 16) >= 0


def test_secrets_and_ids_are_random_and_long_enough() -> None:
    secrets_drawn = {new_client_secret() for _ in range(100)}
    ids = {new_client_id() for _ in range(100)}

    assert len(secrets_drawn) == 100
    assert len(ids) == 100
    assert min(len(s) for s in secrets_drawn) >= 43  # 32 random bytes, base64url
    assert all(":" not in i for i in ids)


def test_no_scope_asked_for_is_every_scope_of_the_client() -> None:
    assert granted_scopes(REPORTING, None) == ("reports:read", "reports:write")
    assert granted_scopes(REPORTING, "") == ("reports:read", "reports:write")


def test_a_subset_is_granted_as_asked() -> None:
    assert granted_scopes(REPORTING, "reports:write") == ("reports:write",)
    assert granted_scopes(REPORTING, "reports:write reports:read") == (
        "reports:read",
        "reports:write",
    )


def test_a_scope_beyond_the_clients_is_invalid_scope() -> None:
    with pytest.raises(OAuthError) as raised:
        granted_scopes(REPORTING, "reports:read admin")

    assert raised.value.status == 400
    assert raised.value.body()["error"] == "invalid_scope"
    assert raised.value.body()["code"] == "INVALID_SCOPE"


@pytest.mark.parametrize("scope", ["reports:read", "a", "x" * 64, "urn:example:read!#$"])
def test_rfc6749_scope_tokens_are_accepted(scope: str) -> None:
    assert scope_problem(scope) is None


@pytest.mark.parametrize("scope", ["", "two words", 'quo"te', "back\\slash", "é", "x" * 65])
def test_other_scopes_are_refused(scope: str) -> None:
    assert scope_problem(scope) is not None
