"""Signing keys: `keys generate`, the JWKS, rotation, a resource server trusting only the JWKS."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from service.core.config import ConfigError, Settings
from service.core.keys import (
    generate_private_key_pem,
    jwks,
    key_from_pem,
    load_previous_keys,
    token_settings,
)
from service.core.tokens import SigningKey, TokenSettings
from service.ops.cli import main
from tests.commands import Finished, InProcessCommand
from tests.servers import ROOT, clean_env, hypercorn_server, run_python
from tests.support import PASSWORD, Client, make_settings, running_app

KeysGenerate = Callable[..., Awaitable[Finished]]
ASYMMETRIC = ["RS256", "ES256", "EdDSA"]
JWKS_PATH = "/.well-known/jwks.json"
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}
CHEAP_HASHING = {"AUTH_ARGON2_MEMORY_COST": "1024", "AUTH_ARGON2_TIME_COST": "1"}


# Production without a secret and an unreachable database: `keys generate` needs neither.
KEYS_ENVIRONMENT = {
    "AUTH_ENV": "production",
    "AUTH_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/nothing",
}


@pytest.fixture
def keys_generate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> KeysGenerate:
    """``keys generate ARGS`` in this process, on the production environment above."""
    command = InProcessCommand(monkeypatch, capsys, tmp_path, KEYS_ENVIRONMENT)

    async def run(*args: str) -> Finished:
        return await command("keys", "generate", *args)

    return run


def write_key(directory: Path, name: str, algorithm: str) -> Path:
    path = directory / name
    path.write_bytes(generate_private_key_pem(algorithm))
    return path


def names_in(directory: Path) -> list[str]:
    """No staged file is left behind next to the key."""
    return sorted(path.name for path in directory.iterdir())


def kid_of(path: Path, algorithm: str) -> str:
    return key_from_pem(algorithm, path.read_bytes()).kid


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Client]:
    async with running_app(settings) as app:
        yield app.test_client()


async def sign_up_and_log_in(client: Client) -> tuple[str, str]:
    """The new user's id and an access token for it."""
    signup = await client.post(
        "/signup", json={"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    )
    assert signup.status_code == 201
    user_id: str = (await signup.get_json())["id"]
    return user_id, await log_in(client)


async def log_in(client: Client) -> str:
    response = await client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    token: str = (await response.get_json())["access_token"]
    return token


async def protected_status(client: Client, token: str) -> tuple[int, dict[str, Any]]:
    response = await client.get("/protected", headers={"Authorization": f"Bearer {token}"})
    body: dict[str, Any] = await response.get_json()
    return response.status_code, body


async def published_kids(client: Client) -> list[str]:
    response = await client.get(JWKS_PATH)
    assert response.status_code == 200
    return [key["kid"] for key in (await response.get_json())["keys"]]


# `keys generate`


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
async def test_keys_generate_writes_an_owner_only_pem_and_prints_its_kid(
    tmp_path: Path, keys_generate: KeysGenerate, algorithm: str
) -> None:
    out = tmp_path / "signing.pem"

    finished = await keys_generate("--algorithm", algorithm, "--out", str(out))

    assert finished.returncode == 0, finished.stderr
    pem = out.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert out.stat().st_mode & 0o777 == 0o600
    assert finished.stdout == f"{key_from_pem(algorithm, pem).kid}\n"
    assert names_in(tmp_path) == ["signing.pem"]


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
async def test_keys_generate_refuses_to_overwrite_without_force(
    tmp_path: Path, keys_generate: KeysGenerate, algorithm: str
) -> None:
    out = write_key(tmp_path, "signing.pem", algorithm)
    original = out.read_bytes()

    refused = await keys_generate("--algorithm", algorithm, "--out", str(out))
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr == f"error: {out} exists; pass --force to overwrite it\n"
    assert out.read_bytes() == original

    forced = await keys_generate("--algorithm", algorithm, "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert out.read_bytes() != original
    assert out.stat().st_mode & 0o777 == 0o600
    assert forced.stdout == f"{kid_of(out, algorithm)}\n"
    assert names_in(tmp_path) == ["signing.pem"]


def test_keys_generate_creates_missing_folders_owner_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys" / "current" / "signing.pem"

    previous_umask = os.umask(0o277)  # the modes are exact whatever the umask
    try:
        code = main(["keys", "generate", "--algorithm", "ES256", "--out", str(out)])
    finally:
        os.umask(previous_umask)

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    assert captured.out == f"{kid_of(out, 'ES256')}\n"
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "keys" / "current").stat().st_mode & 0o777 == 0o700
    assert out.stat().st_mode & 0o777 == 0o600
    assert names_in(out.parent) == ["signing.pem"]


def test_keys_generate_leaves_an_existing_folder_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o755)

    code = main(["keys", "generate", "--algorithm", "ES256", "--out", str(folder / "k.pem")])

    assert code == 0, capsys.readouterr().err
    assert folder.stat().st_mode & 0o777 == 0o755
    assert (folder / "k.pem").stat().st_mode & 0o777 == 0o600


def test_keys_generate_reports_a_folder_it_cannot_create_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / ("x" * 300)  # longer than any file system allows a name to be

    code = main(["keys", "generate", "--algorithm", "ES256", "--out", str(folder / "k.pem")])

    captured = capsys.readouterr()
    assert code == 1
    assert captured.err == f"error: cannot create {folder}: File name too long\n"
    assert names_in(tmp_path) == []


async def test_keys_generate_reports_an_unwritable_path_in_one_line(
    tmp_path: Path, keys_generate: KeysGenerate
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "signing.pem"

    finished = await keys_generate("--algorithm", "ES256", "--out", str(out))

    assert finished.returncode == 1
    assert finished.stdout == ""
    assert finished.stderr == f"error: {tmp_path / 'a-file'} exists and is not a folder\n"


async def test_keys_generate_offers_only_asymmetric_algorithms(
    tmp_path: Path, keys_generate: KeysGenerate
) -> None:
    finished = await keys_generate("--algorithm", "HS256", "--out", str(tmp_path / "k"))

    assert finished.returncode == 2
    assert "invalid choice: 'HS256'" in finished.stderr
    assert not (tmp_path / "k").exists()


@pytest.mark.slow
def test_python_m_service_keys_generate_needs_no_secret_and_no_database(tmp_path: Path) -> None:
    # A fresh interpreter: nothing that `python -m service` imports may want the secret or the
    # database (the in-process tests above run with the service already imported).
    out = tmp_path / "signing.pem"

    finished = run_python(
        "-m",
        "service",
        *["keys", "generate", "--algorithm", "ES256", "--out", str(out)],
        cwd=ROOT,
        env=clean_env(**KEYS_ENVIRONMENT),
    )

    assert finished.returncode == 0, finished.stderr
    assert finished.stderr == ""
    assert finished.stdout == f"{kid_of(out, 'ES256')}\n"
    assert out.stat().st_mode & 0o777 == 0o600


# The service signing with an asymmetric key


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
async def test_token_verifies_and_jwks_publishes_exactly_its_public_key(
    tmp_path: Path, algorithm: str
) -> None:
    pem_path = write_key(tmp_path, "current.pem", algorithm)
    settings = make_settings(tmp_path, jwt_algorithm=algorithm, jwt_private_key_file=pem_path)

    async with running(settings) as client:
        user_id, token = await sign_up_and_log_in(client)
        status, body = await protected_status(client, token)
        response = await client.get(JWKS_PATH)
        key_set: dict[str, Any] = await response.get_json()

    assert status == 200
    assert body == {"id": user_id, "username": "alice"}
    header = jwt.get_unverified_header(token)
    assert header == {"alg": algorithm, "typ": "JWT", "kid": kid_of(pem_path, algorithm)}
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
    assert response.mimetype == "application/json"
    [published] = key_set["keys"]
    assert published == SigningKey.from_private_pem(algorithm, pem_path.read_bytes()).public_jwk
    assert published["kid"] == header["kid"]
    assert published["alg"] == algorithm
    assert published["use"] == "sig"
    assert not PRIVATE_JWK_MEMBERS & published.keys()


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
async def test_rotation_keeps_old_tokens_valid_until_the_old_key_is_dropped(
    tmp_path: Path, algorithm: str
) -> None:
    key_a = write_key(tmp_path, "a.pem", algorithm)
    key_b = write_key(tmp_path, "b.pem", algorithm)
    kid_a, kid_b = kid_of(key_a, algorithm), kid_of(key_b, algorithm)

    async with running(
        make_settings(tmp_path, jwt_algorithm=algorithm, jwt_private_key_file=key_a)
    ) as client:
        _, old_token = await sign_up_and_log_in(client)
    rotating = make_settings(
        tmp_path,
        jwt_algorithm=algorithm,
        jwt_private_key_file=key_b,
        jwt_previous_key_files=f" {key_a} ,",
    )
    async with running(rotating) as client:
        during_status, _ = await protected_status(client, old_token)
        during_kids = await published_kids(client)
        new_token = await log_in(client)
    async with running(
        make_settings(tmp_path, jwt_algorithm=algorithm, jwt_private_key_file=key_b)
    ) as client:
        after_status, after_body = await protected_status(client, old_token)
        after_kids = await published_kids(client)
        new_token_status, _ = await protected_status(client, new_token)

    assert jwt.get_unverified_header(old_token)["kid"] == kid_a
    assert during_status == 200
    assert during_kids == [kid_b, kid_a]
    assert jwt.get_unverified_header(new_token)["kid"] == kid_b
    assert after_status == 401
    assert after_body["code"] == "TOKEN_INVALID"
    assert after_kids == [kid_b]
    assert new_token_status == 200


async def test_hmac_publishes_no_keys_and_a_previous_secret_keeps_old_tokens_valid(
    tmp_path: Path,
) -> None:
    secret_a, secret_b = secrets.token_urlsafe(48), secrets.token_urlsafe(48)

    async with running(make_settings(tmp_path, jwt_secret=secret_a)) as client:
        _, old_token = await sign_up_and_log_in(client)
        before = await client.get(JWKS_PATH)
        before_body = await before.get_json()
    rotating = make_settings(tmp_path, jwt_secret=secret_b, jwt_previous_secrets=secret_a)
    async with running(rotating) as client:
        during_status, _ = await protected_status(client, old_token)
        during_body = await (await client.get(JWKS_PATH)).get_json()
    async with running(make_settings(tmp_path, jwt_secret=secret_b)) as client:
        after_status, after_body = await protected_status(client, old_token)

    assert before.status_code == 200
    assert before.headers["Cache-Control"] == "public, max-age=300"
    assert before_body == {"keys": []}
    assert during_status == 200
    assert during_body == {"keys": []}
    assert after_status == 401
    assert after_body["code"] == "TOKEN_INVALID"


async def test_openapi_documents_the_jwks(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as client:
        schema = await (await client.get("/openapi.json")).get_json()

    operation = schema["paths"][JWKS_PATH]["get"]
    assert operation["tags"] == ["keys"]
    assert "200" in operation["responses"]
    assert "security" not in operation


# Loading keys from configuration (no app)


def test_jwks_lists_the_current_key_then_previous_ones_once_each() -> None:
    current = key_from_pem("ES256", generate_private_key_pem("ES256"))
    previous = key_from_pem("ES256", generate_private_key_pem("ES256"))
    settings = token_settings_with(current, previous, current, previous)

    assert jwks(settings) == {"keys": [current.public_jwk, previous.public_jwk]}


def test_jwks_never_publishes_an_hmac_secret() -> None:
    secret_key = SigningKey.hmac("HS256", secrets.token_bytes(32))

    assert jwks(token_settings_with(secret_key, secret_key)) == {"keys": []}


def token_settings_with(current: SigningKey, *previous: SigningKey) -> TokenSettings:
    return TokenSettings(current, "iss", "aud", 60, 120, previous_keys=previous)


def test_previous_secrets_skip_empty_entries(tmp_path: Path) -> None:
    first, second = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    settings = make_settings(tmp_path, jwt_previous_secrets=f"{first},, {second} ,")

    keys = load_previous_keys(settings)

    assert keys == (
        SigningKey.hmac("HS256", first.encode()),
        SigningKey.hmac("HS256", second.encode()),
    )


def test_a_short_previous_secret_is_refused_without_echoing_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, jwt_previous_secrets=f"{secrets.token_urlsafe(32)},tooshort")

    with pytest.raises(ConfigError) as caught:
        load_previous_keys(settings)

    assert str(caught.value) == (
        "AUTH_JWT_PREVIOUS_SECRETS: entry 2 is 8 bytes; at least 32 are required"
    )


def test_no_previous_keys_by_default(tmp_path: Path) -> None:
    assert load_previous_keys(make_settings(tmp_path)) == ()
    pem_path = write_key(tmp_path, "current.pem", "EdDSA")
    settings = make_settings(tmp_path, jwt_algorithm="EdDSA", jwt_private_key_file=pem_path)
    assert load_previous_keys(settings) == ()


def _bad_previous_key(tmp_path: Path, problem: str) -> tuple[Path, str]:
    path = tmp_path / f"{problem}.pem"
    if problem == "missing":
        return path, f"AUTH_JWT_PREVIOUS_KEY_FILES: cannot read {path}: No such file or directory"
    if problem == "garbage":
        path.write_bytes(b"not a key")
        return path, f"AUTH_JWT_PREVIOUS_KEY_FILES: {path}: not a PEM private key"
    if problem == "wrong-type":
        path.write_bytes(generate_private_key_pem("EdDSA"))
        return path, f"AUTH_JWT_PREVIOUS_KEY_FILES: {path}: not a P-256 EC private key for ES256"
    assert problem == "public-key"
    public = key_from_pem("ES256", generate_private_key_pem("ES256")).verifying
    path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path, f"AUTH_JWT_PREVIOUS_KEY_FILES: {path}: not a PEM private key"


@pytest.mark.parametrize("problem", ["missing", "garbage", "wrong-type", "public-key"])
def test_an_unusable_previous_key_file_is_a_one_line_config_error(
    tmp_path: Path, problem: str
) -> None:
    path, message = _bad_previous_key(tmp_path, problem)
    good = write_key(tmp_path, "good.pem", "ES256")
    settings = make_settings(
        tmp_path,
        jwt_algorithm="ES256",
        jwt_private_key_file=good,
        jwt_previous_key_files=f"{good},{path}",
    )

    with pytest.raises(ConfigError) as caught:
        load_previous_keys(settings)

    assert str(caught.value) == message


def test_a_current_key_of_the_wrong_type_is_a_config_error_not_a_traceback(
    tmp_path: Path,
) -> None:
    rsa_key = write_key(tmp_path, "rsa.pem", "RS256")
    settings = make_settings(tmp_path, jwt_algorithm="ES256", jwt_private_key_file=rsa_key)

    with pytest.raises(ConfigError) as caught:
        token_settings(settings)

    assert str(caught.value) == (
        f"AUTH_JWT_PRIVATE_KEY_FILE: {rsa_key}: not a P-256 EC private key for ES256"
    )


@pytest.mark.parametrize(
    ("algorithm", "overrides", "message"),
    [
        (
            "HS256",
            {"jwt_previous_key_files": "old.pem"},
            "AUTH_JWT_PREVIOUS_KEY_FILES needs an asymmetric AUTH_JWT_ALGORITHM, not HS256; "
            "use AUTH_JWT_PREVIOUS_SECRETS",
        ),
        (
            "ES256",
            {"jwt_previous_secrets": "x" * 40},
            "AUTH_JWT_PREVIOUS_SECRETS needs an HMAC AUTH_JWT_ALGORITHM, not ES256; "
            "use AUTH_JWT_PREVIOUS_KEY_FILES",
        ),
    ],
)
def test_previous_keys_of_the_other_kind_are_refused_not_ignored(
    tmp_path: Path, algorithm: str, overrides: dict[str, Any], message: str
) -> None:
    settings = make_settings(tmp_path, jwt_algorithm=algorithm, **overrides)

    with pytest.raises(ConfigError) as caught:
        load_previous_keys(settings)

    assert str(caught.value) == message


# A resource server that knows only the JWKS URL


async def verify_with_jwks_only(jwks_url: str, token: str) -> dict[str, Any]:
    """What a separate API does: fetch the key named by the token's kid, then verify."""
    jwk_client = jwt.PyJWKClient(jwks_url)
    # PyJWKClient fetches with blocking urllib: keep it off the event loop.
    signing_key = await asyncio.to_thread(jwk_client.get_signing_key_from_jwt, token)
    claims: dict[str, Any] = jwt.decode(
        token,
        signing_key.key,
        algorithms=["ES256"],
        audience="auth-service",
        issuer="auth-service",
    )
    return claims


@pytest.mark.slow
async def test_a_resource_server_verifies_tokens_with_only_the_jwks_url(tmp_path: Path) -> None:
    pem_path = write_key(tmp_path, "signing.pem", "ES256")
    env = clean_env(
        AUTH_ENV="testing",
        AUTH_JWT_ALGORITHM="ES256",
        AUTH_JWT_PRIVATE_KEY_FILE=str(pem_path),
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
        **CHEAP_HASHING,
    )
    async with hypercorn_server(tmp_path, env) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as http:
            signup = await http.post(
                "/signup",
                json={"username": "alice", "email": "alice@example.com", "password": PASSWORD},
            )
            login = await http.post("/login", json={"username": "alice", "password": PASSWORD})
            key_set = await http.get(JWKS_PATH)
        token: str = login.json()["access_token"]
        claims = await verify_with_jwks_only(f"{base_url}{JWKS_PATH}", token)

        impostor_key = key_from_pem("ES256", generate_private_key_pem("ES256"))
        forged = jwt.encode(
            {**claims, "sub": "someone-else"},
            impostor_key.signing,
            algorithm="ES256",
            headers={"kid": jwt.get_unverified_header(token)["kid"], "typ": "JWT"},
        )
        with pytest.raises(jwt.InvalidSignatureError):
            await verify_with_jwks_only(f"{base_url}{JWKS_PATH}", forged)

    assert signup.status_code == 201
    assert claims["sub"] == signup.json()["id"]
    assert claims["type"] == "access"
    assert key_set.headers["Cache-Control"] == "public, max-age=300"
    assert [key["kid"] for key in key_set.json()["keys"]] == [kid_of(pem_path, "ES256")]
