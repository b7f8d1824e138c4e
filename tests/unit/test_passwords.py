"""Unit tests of password hashing: argon2id, bcrypt upgrade, dummy verification, off-loop work."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import argon2
import bcrypt
import pytest

from service.core.config import Settings
from service.core.passwords import PasswordHasher, Verification, normalize_password
from tests.support import PASSWORD, make_settings

BCRYPT_PASSWORD = "legacy password from the old system"


@pytest.fixture
def hasher(settings: Settings) -> Iterator[PasswordHasher]:
    password_hasher = PasswordHasher(settings)
    yield password_hasher
    password_hasher.close()


def bcrypt_hash(password: str, rounds: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def argon2_params(settings: Settings) -> str:
    return (
        f"m={settings.argon2_memory_cost},t={settings.argon2_time_cost},"
        f"p={settings.argon2_parallelism}"
    )


async def test_hash_is_argon2id_with_the_configured_parameters(
    hasher: PasswordHasher, settings: Settings
) -> None:
    hashed = await hasher.hash(PASSWORD)

    assert hashed.startswith("$argon2id$v=19$")
    assert f"${argon2_params(settings)}$" in hashed
    assert PASSWORD not in hashed


async def test_hashing_the_same_password_twice_uses_a_new_salt(hasher: PasswordHasher) -> None:
    assert await hasher.hash(PASSWORD) != await hasher.hash(PASSWORD)


async def test_verify_accepts_the_right_password(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash(PASSWORD)

    assert await hasher.verify(PASSWORD, hashed) == Verification(ok=True, new_hash=None)


@pytest.mark.parametrize(
    "attempt", ["", "wrong password", PASSWORD.upper(), PASSWORD + " ", PASSWORD[:-1]]
)
async def test_verify_refuses_a_wrong_password(hasher: PasswordHasher, attempt: str) -> None:
    hashed = await hasher.hash(PASSWORD)

    assert await hasher.verify(attempt, hashed) == Verification(ok=False, new_hash=None)


@pytest.mark.parametrize(
    ("stored", "attempt"),
    [
        ("\ufb01sh and chips", "fish and chips"),  # U+FB01 LATIN SMALL LIGATURE FI
        ("fish and chips", "\ufb01sh and chips"),
        ("caf\u00e9 au lait", "cafe\u0301 au lait"),  # precomposed vs combining accent
        ("\uff50\uff41\uff53\uff53", "pass"),  # fullwidth letters
    ],
)
async def test_passwords_equal_under_nfkc_verify_the_same(
    hasher: PasswordHasher, stored: str, attempt: str
) -> None:
    assert stored != attempt
    assert normalize_password(stored) == normalize_password(attempt)
    hashed = await hasher.hash(stored)

    assert (await hasher.verify(attempt, hashed)).ok is True


async def test_bcrypt_hash_verifies_and_is_upgraded_to_argon2id(
    hasher: PasswordHasher, settings: Settings
) -> None:
    legacy = bcrypt_hash(BCRYPT_PASSWORD)
    assert legacy.startswith("$2b$04$")

    verification = await hasher.verify(BCRYPT_PASSWORD, legacy)

    assert verification.ok is True
    assert verification.new_hash is not None
    assert verification.new_hash.startswith("$argon2id$")
    assert f"${argon2_params(settings)}$" in verification.new_hash
    upgraded = await hasher.verify(BCRYPT_PASSWORD, verification.new_hash)
    assert upgraded == Verification(ok=True, new_hash=None)


async def test_bcrypt_hash_refuses_a_wrong_password_without_upgrade(
    hasher: PasswordHasher,
) -> None:
    legacy = bcrypt_hash(BCRYPT_PASSWORD)

    assert await hasher.verify("not it", legacy) == Verification(ok=False, new_hash=None)


async def test_argon2_hash_with_weaker_parameters_is_rehashed(tmp_path: Path) -> None:
    weak_settings = make_settings(tmp_path, argon2_memory_cost=512, argon2_time_cost=1)
    strong_settings = make_settings(tmp_path, argon2_memory_cost=2048, argon2_time_cost=2)
    weak, strong = PasswordHasher(weak_settings), PasswordHasher(strong_settings)
    try:
        weak_hash = await weak.hash(PASSWORD)
        assert "$m=512,t=1,p=1$" in weak_hash

        verification = await strong.verify(PASSWORD, weak_hash)

        assert verification.ok is True
        assert verification.new_hash is not None
        assert verification.new_hash.startswith("$argon2id$")
        assert "$m=2048,t=2,p=1$" in verification.new_hash
        assert await strong.verify(PASSWORD, verification.new_hash) == Verification(True, None)
    finally:
        weak.close()
        strong.close()


async def test_argon2_hash_made_elsewhere_with_the_same_parameters_is_not_rehashed(
    hasher: PasswordHasher, settings: Settings
) -> None:
    foreign = argon2.PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost,
        parallelism=settings.argon2_parallelism,
        type=argon2.Type.ID,
    ).hash(PASSWORD)

    assert await hasher.verify(PASSWORD, foreign) == Verification(ok=True, new_hash=None)


async def test_argon2i_hash_is_upgraded_to_argon2id(
    hasher: PasswordHasher, settings: Settings
) -> None:
    argon2i = argon2.PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost,
        parallelism=settings.argon2_parallelism,
        type=argon2.Type.I,
    ).hash(PASSWORD)
    assert argon2i.startswith("$argon2i$")

    verification = await hasher.verify(PASSWORD, argon2i)

    assert verification.ok is True
    assert verification.new_hash is not None
    assert verification.new_hash.startswith("$argon2id$")


async def test_verify_without_stored_hash_checks_a_dummy_and_fails(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    original = hasher.context.verify_and_update

    def recording(secret: str, hash: str, **kwargs: Any) -> tuple[bool, str | None]:
        checked.append(hash)
        result: tuple[bool, str | None] = original(secret, hash, **kwargs)
        return result

    monkeypatch.setattr(hasher.context, "verify_and_update", recording)

    verification = await hasher.verify(PASSWORD, None)

    assert verification == Verification(ok=False, new_hash=None)
    assert checked == [await hasher.dummy_hash()]
    assert checked[0].startswith("$argon2id$")


async def test_dummy_hash_is_made_once(hasher: PasswordHasher) -> None:
    first = await hasher.dummy_hash()

    assert await hasher.dummy_hash() == first
    assert first.startswith("$argon2id$")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plaintext-password",
        "$argon2id$v=19$m=1024,t=1,p=1$garbage",
        "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$",
        "$argon2id$v=19$m=abc,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo",
        "$2b$04$tooshort",
        "$2b$99$bg5YrHqOuiU69Dmr9niNWuoaeKhlksNwkFSlLLkIBt5cSpXVusTdC",  # cost out of range
        "$1$md5crypt$notsupportedhere",
        "$unknown$scheme",
        "\x00\x01\x02",
    ],
)
async def test_corrupt_stored_hash_is_not_a_match_and_does_not_raise(
    hasher: PasswordHasher, stored: str
) -> None:
    assert await hasher.verify(PASSWORD, stored) == Verification(ok=False, new_hash=None)


async def test_password_over_72_bytes_against_bcrypt_does_not_raise(
    hasher: PasswordHasher,
) -> None:
    legacy = bcrypt_hash(BCRYPT_PASSWORD)
    long_password = "\u00e9" * 50  # 100 bytes in UTF-8
    assert len(long_password.encode()) > 72

    verification = await hasher.verify(long_password, legacy)

    assert verification == Verification(ok=False, new_hash=None)


async def test_password_over_72_bytes_is_hashed_and_verified_with_argon2(
    hasher: PasswordHasher,
) -> None:
    long_password = "x" * 72 + "tail"
    hashed = await hasher.hash(long_password)

    assert (await hasher.verify(long_password, hashed)).ok is True
    # argon2 does not truncate: the first 72 bytes alone are not the password.
    assert (await hasher.verify("x" * 72, hashed)).ok is False


async def test_hashing_runs_on_the_password_hash_threads(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    original = hasher.context.hash

    def recording(secret: str, **kwargs: Any) -> str:
        threads.append(threading.current_thread().name)
        result: str = original(secret, **kwargs)
        return result

    monkeypatch.setattr(hasher.context, "hash", recording)

    hashed = await hasher.hash(PASSWORD)

    assert hashed.startswith("$argon2id$")
    assert len(threads) == 1
    assert threads[0].startswith("password-hash")
    assert threads[0] != threading.current_thread().name


async def test_verification_runs_on_the_password_hash_threads(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed = await hasher.hash(PASSWORD)
    threads: list[str] = []
    original = hasher.context.verify_and_update

    def recording(secret: str, hash: str, **kwargs: Any) -> tuple[bool, str | None]:
        threads.append(threading.current_thread().name)
        result: tuple[bool, str | None] = original(secret, hash, **kwargs)
        return result

    monkeypatch.setattr(hasher.context, "verify_and_update", recording)

    assert (await hasher.verify(PASSWORD, hashed)).ok is True
    assert (await hasher.verify(PASSWORD, None)).ok is False
    assert len(threads) == 2
    assert all(name.startswith("password-hash") for name in threads)
