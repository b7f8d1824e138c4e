"""Hashes from the seed Flask apps: werkzeug pbkdf2/scrypt and flask-bcrypt verify and upgrade."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from werkzeug.security import check_password_hash, generate_password_hash

from service.core import passwords
from service.core.config import Settings
from service.core.passwords import PasswordHasher, Verification, legacy_scheme
from service.store.unit_of_work import unit_of_work
from service.web.state import get_state
from tests.support import make_settings, running_app

LEGACY_PASSWORD = "legacy password from flask"
LIGATURE_PASSWORD = "\ufb01sh and chips"  # U+FB01 LATIN SMALL LIGATURE FI: NFKC gives "fish"
NFKC_OF_LIGATURE = "fish and chips"

# (werkzeug method, the prefix of the hash it produces)
WERKZEUG_METHODS = [
    ("pbkdf2:sha256:1000", "pbkdf2:sha256:1000$"),
    ("pbkdf2:sha1:1000", "pbkdf2:sha1:1000$"),
    ("pbkdf2:sha512:1000", "pbkdf2:sha512:1000$"),
    ("scrypt:1024:8:1", "scrypt:1024:8:1$"),
]
# Werkzeug's own defaults, as the seed apps stored them (slower: one of each).
WERKZEUG_DEFAULTS = [
    ("pbkdf2:sha256:600000", "pbkdf2:sha256:600000$"),  # werkzeug 2.3 to 3.0
    ("pbkdf2:sha256", "pbkdf2:sha256:1000000$"),  # werkzeug 3.1
    ("scrypt", "scrypt:32768:8:1$"),
]


@pytest.fixture
def hasher(settings: Settings) -> Iterator[PasswordHasher]:
    password_hasher = PasswordHasher(settings)
    yield password_hasher
    password_hasher.close()


def bcrypt_hash(password: str | bytes, prefix: str = "2b") -> str:
    """What flask-bcrypt stores (bcrypt.hashpw with gensalt), at rounds=4 for speed."""
    secret = password.encode() if isinstance(password, str) else password
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(rounds=4, prefix=b"2b")).decode()
    # $2a$ and $2y$ are the same algorithm under other names (older bcrypt, PHP).
    return hashed.replace("$2b$", f"${prefix}$", 1)


# A well-formed bcrypt hash of another password, to be corrupted.
SAMPLE_BCRYPT = bcrypt_hash("another password")


def assert_upgraded(verification: Verification) -> str:
    assert verification.ok is True
    assert verification.new_hash is not None
    assert verification.new_hash.startswith("$argon2id$")
    return verification.new_hash


@pytest.mark.parametrize(("method", "prefix"), WERKZEUG_METHODS + WERKZEUG_DEFAULTS)
async def test_werkzeug_hash_verifies_and_is_upgraded_to_argon2id(
    hasher: PasswordHasher, method: str, prefix: str
) -> None:
    legacy = generate_password_hash(LEGACY_PASSWORD, method=method)
    assert legacy.startswith(prefix)

    new_hash = assert_upgraded(await hasher.verify(LEGACY_PASSWORD, legacy))

    assert await hasher.verify(LEGACY_PASSWORD, new_hash) == Verification(ok=True, new_hash=None)


@pytest.mark.parametrize(("method", "prefix"), WERKZEUG_METHODS)
async def test_werkzeug_hash_refuses_a_wrong_password_without_upgrade(
    hasher: PasswordHasher, method: str, prefix: str
) -> None:
    legacy = generate_password_hash(LEGACY_PASSWORD, method=method)

    for attempt in ("", "wrong password", LEGACY_PASSWORD.upper(), LEGACY_PASSWORD + " "):
        assert await hasher.verify(attempt, legacy) == Verification(ok=False, new_hash=None)


@pytest.mark.parametrize("prefix", ["2b", "2a", "2y"])
async def test_flask_bcrypt_hash_verifies_and_is_upgraded_to_argon2id(
    hasher: PasswordHasher, prefix: str
) -> None:
    legacy = bcrypt_hash(LEGACY_PASSWORD, prefix)
    assert legacy.startswith(f"${prefix}$04$")

    new_hash = assert_upgraded(await hasher.verify(LEGACY_PASSWORD, legacy))

    assert await hasher.verify(LEGACY_PASSWORD, new_hash) == Verification(ok=True, new_hash=None)
    assert await hasher.verify("wrong password", legacy) == Verification(ok=False, new_hash=None)


LONG_PREFIX = "\u00e9" * 30 + "x" * 12  # 72 bytes in UTF-8


async def test_bcrypt_never_accepts_passwords_sharing_their_first_72_bytes(
    hasher: PasswordHasher,
) -> None:
    # An old bcrypt truncated silently, so what it stored is the hash of the first 72 bytes.
    assert len(LONG_PREFIX.encode()) == 72
    legacy = bcrypt_hash(LONG_PREFIX)

    first = await hasher.verify(LONG_PREFIX + "tail one", legacy)
    second = await hasher.verify(LONG_PREFIX + "tail two", legacy)

    assert first == Verification(ok=False, new_hash=None)
    assert second == Verification(ok=False, new_hash=None)
    assert (await hasher.verify(LONG_PREFIX, legacy)).ok is True


async def test_bcrypt_refuses_long_passwords_even_with_a_truncating_backend(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bcrypt < 5 (allowed by pyproject) truncates silently instead of raising ValueError."""
    legacy = bcrypt_hash(LONG_PREFIX)
    backend_calls: list[int] = []

    def truncating_verify(secret: str, hash: str, **kwargs: Any) -> bool:
        backend_calls.append(len(secret.encode()))
        return bcrypt.checkpw(secret.encode()[:72], hash.encode())

    monkeypatch.setattr(hasher.context, "verify", truncating_verify)

    assert (await hasher.verify(LONG_PREFIX + "tail one", legacy)).ok is False
    assert (await hasher.verify(LONG_PREFIX + "tail two", legacy)).ok is False
    assert backend_calls == []
    assert (await hasher.verify(LONG_PREFIX, legacy)).ok is True
    assert backend_calls == [72]


@pytest.mark.parametrize(
    "make_hash",
    [
        lambda password: generate_password_hash(password, method="pbkdf2:sha256:1000"),
        lambda password: generate_password_hash(password, method="scrypt:1024:8:1"),
        bcrypt_hash,
    ],
    ids=["pbkdf2", "scrypt", "bcrypt"],
)
async def test_legacy_hash_of_the_raw_password_accepts_it_as_typed(
    hasher: PasswordHasher, make_hash: Callable[[str], str]
) -> None:
    """The old apps hashed the raw password, not its NFKC form: the raw one is tried first."""
    legacy = make_hash(LIGATURE_PASSWORD)

    new_hash = assert_upgraded(await hasher.verify(LIGATURE_PASSWORD, legacy))

    # Before the upgrade the NFKC variant is not accepted (the raw one was hashed); once
    # upgraded, both are, as for every password of the service.
    assert (await hasher.verify(NFKC_OF_LIGATURE, legacy)).ok is False
    assert (await hasher.verify(NFKC_OF_LIGATURE, new_hash)).ok is True
    assert (await hasher.verify(LIGATURE_PASSWORD, new_hash)).ok is True


@pytest.mark.parametrize(
    "make_hash",
    [
        lambda password: generate_password_hash(password, method="pbkdf2:sha256:1000"),
        lambda password: generate_password_hash(password, method="scrypt:1024:8:1"),
        bcrypt_hash,
    ],
    ids=["pbkdf2", "scrypt", "bcrypt"],
)
async def test_legacy_hash_of_the_nfkc_form_accepts_a_variant(
    hasher: PasswordHasher, make_hash: Callable[[str], str]
) -> None:
    """The NFKC form is tried when the raw password does not match."""
    legacy = make_hash(NFKC_OF_LIGATURE)

    assert_upgraded(await hasher.verify(LIGATURE_PASSWORD, legacy))
    assert_upgraded(await hasher.verify(NFKC_OF_LIGATURE, legacy))


async def test_ascii_password_is_checked_once(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy = generate_password_hash(LEGACY_PASSWORD, method="pbkdf2:sha256:1000")
    checked: list[str] = []

    def recording(pwhash: str, password: str) -> bool:
        checked.append(password)
        return check_password_hash(pwhash, password)

    monkeypatch.setattr(passwords, "check_password_hash", recording)

    assert (await hasher.verify("wrong password", legacy)).ok is False
    assert checked == ["wrong password"]
    checked.clear()
    assert (await hasher.verify(LIGATURE_PASSWORD, legacy)).ok is False
    assert checked == [LIGATURE_PASSWORD, NFKC_OF_LIGATURE]


async def test_legacy_verification_runs_on_the_password_hash_threads(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy = generate_password_hash(LEGACY_PASSWORD, method="pbkdf2:sha256:1000")
    threads: list[str] = []

    def recording(pwhash: str, password: str) -> bool:
        threads.append(threading.current_thread().name)
        return check_password_hash(pwhash, password)

    monkeypatch.setattr(passwords, "check_password_hash", recording)

    assert (await hasher.verify(LEGACY_PASSWORD, legacy)).ok is True
    assert len(threads) == 1
    assert threads[0].startswith("password-hash")


@pytest.mark.parametrize(
    "stored",
    [
        "pbkdf2:sha256:1000$salt$not-hex",
        "pbkdf2:sha256:1000$salt$",
        "pbkdf2:sha256:1000$$abcdef",
        "pbkdf2:no-such-digest:1000$salt$abcdef",
        "pbkdf2:sha256:0$salt$abcdef",
        "pbkdf2:sha256:x$salt$abcdef",
        "pbkdf2:sha256:1000:7$salt$abcdef",
        "scrypt:1000:8:1$salt$abcdef",  # n is not a power of two
        "scrypt:1024:8$salt$abcdef",
        "scrypt:0:8:1$salt$abcdef",
        "sha256$salt$abcdef",  # werkzeug < 2.3's plain hashes: werkzeug 3 refuses them
        "plain$$" + LEGACY_PASSWORD,
        SAMPLE_BCRYPT.replace("$2b$", "$2x$", 1),  # crypt_blowfish's buggy variant
        SAMPLE_BCRYPT.replace("$04$", "$99$", 1),  # cost out of range
        SAMPLE_BCRYPT.replace("$04$", "$03$", 1),
        SAMPLE_BCRYPT[:-1],
        SAMPLE_BCRYPT[:7] + "!" * 53,
    ],
)
async def test_corrupt_legacy_hash_is_not_a_match_and_does_not_raise(
    hasher: PasswordHasher, stored: str
) -> None:
    assert await hasher.verify(LEGACY_PASSWORD, stored) == Verification(ok=False, new_hash=None)


@pytest.mark.parametrize(
    "stored",
    [
        "pbkdf2:sha256:99999999999$salt$abcdef",
        "pbkdf2:sha256:10000001$salt$abcdef",
        "scrypt:1048576:64:64$salt$abcdef",
        "scrypt:1048576:8:1$salt$abcdef",  # 1 GiB
    ],
)
async def test_legacy_hash_with_an_excessive_cost_is_refused_without_hashing(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch, stored: str
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(passwords, "check_password_hash", lambda *args: calls.append("!"))

    assert await hasher.verify(LEGACY_PASSWORD, stored) == Verification(ok=False, new_hash=None)
    assert calls == []
    assert legacy_scheme(stored) is None


async def test_password_with_a_lone_surrogate_is_not_a_match(hasher: PasswordHasher) -> None:
    legacy = generate_password_hash(LEGACY_PASSWORD, method="pbkdf2:sha256:1000")

    assert await hasher.verify("\ud800 broken", legacy) == Verification(ok=False, new_hash=None)
    assert await hasher.verify("\ud800 broken", bcrypt_hash("x")) == Verification(False, None)


def test_recognizes_the_supported_formats(hasher: PasswordHasher) -> None:
    assert hasher.recognizes(generate_password_hash("x", method="pbkdf2:sha256:1000"))
    assert hasher.recognizes(generate_password_hash("x", method="scrypt:1024:8:1"))
    assert hasher.recognizes(bcrypt_hash("x", "2y"))
    assert hasher.recognizes(hasher.context.hash("x"))
    for value in ("x", "", "sha256$salt$abcdef", "$1$salt$hash", SAMPLE_BCRYPT[:-1]):
        assert not hasher.recognizes(value)


@pytest.mark.parametrize(
    "make_hash",
    [
        lambda password: generate_password_hash(password, method="pbkdf2:sha256:1000"),
        lambda password: generate_password_hash(password, method="scrypt:1024:8:1"),
        bcrypt_hash,
    ],
    ids=["pbkdf2", "scrypt", "bcrypt"],
)
async def test_login_over_http_upgrades_a_legacy_hash(
    tmp_path: Path, make_hash: Callable[[str], str]
) -> None:
    async with running_app(make_settings(tmp_path)) as app:
        database = get_state(app).accounts.database
        async with unit_of_work(database, write=True) as uow:
            user = await uow.users.add(
                username="flask_user",
                email="flask@example.com",
                password_hash=make_hash(LEGACY_PASSWORD),
            )
            await uow.commit()
            user_id = user.id
        client = app.test_client()

        wrong = await client.post(
            "/login", json={"username": "flask_user", "password": "wrong password"}
        )
        first = await client.post(
            "/login", json={"username": "flask_user", "password": LEGACY_PASSWORD}
        )
        async with unit_of_work(database) as uow:
            stored = await uow.users.by_id(user_id)
        second = await client.post(
            "/login", json={"username": "flask@example.com", "password": LEGACY_PASSWORD}
        )

    assert wrong.status_code == 401
    assert first.status_code == 200
    assert set(await first.get_json()) >= {"access_token", "refresh_token"}
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$")
    assert second.status_code == 200
