"""Signing keys from configuration, new private keys, and the public JSON Web Key Set.

No web framework here: the CLI, the app state and the JWKS route all build on these functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from service.core.config import MIN_SECRET_BYTES, ConfigError, Settings, resolve_jwt_secret
from service.core.tokens import HMAC_ALGORITHMS, SigningKey, TokenSettings

GENERATED_ALGORITHMS = ("RS256", "ES256", "EdDSA")
RSA_GENERATED_BITS = 3072
RSA_MIN_BITS = 2048
PREVIOUS_KEY_FILES_VARIABLE = "AUTH_JWT_PREVIOUS_KEY_FILES"
PREVIOUS_SECRETS_VARIABLE = "AUTH_JWT_PREVIOUS_SECRETS"
KEY_KINDS = {"RS256": "an RSA", "ES256": "a P-256 EC", "EdDSA": "an Ed25519 or Ed448"}


def generate_private_key_pem(algorithm: str) -> bytes:
    """A new private key for ``algorithm`` as an unencrypted PKCS8 PEM."""
    private: PrivateKeyTypes
    if algorithm == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_GENERATED_BITS)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(
            f"cannot generate a key for {algorithm}; use one of {', '.join(GENERATED_ALGORITHMS)}"
        )
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _fits(algorithm: str, private: PrivateKeyTypes) -> bool:
    if algorithm == "RS256":
        return isinstance(private, rsa.RSAPrivateKey)
    if algorithm == "ES256":
        return isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(
            private.curve, ec.SECP256R1
        )
    if algorithm == "EdDSA":
        return isinstance(private, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    return False


def key_from_pem(algorithm: str, pem: bytes) -> SigningKey:
    """The signing key in ``pem``; ValueError (one line) when it does not suit ``algorithm``."""
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ValueError("the private key is encrypted; use an unencrypted PKCS8 PEM") from None
    except ValueError:
        raise ValueError("not a PEM private key") from None
    except UnsupportedAlgorithm:
        raise ValueError("a private key of an unsupported type") from None
    if not _fits(algorithm, private):
        raise ValueError(
            f"not {KEY_KINDS.get(algorithm, 'a suitable')} private key for {algorithm}"
        )
    if isinstance(private, rsa.RSAPrivateKey) and private.key_size < RSA_MIN_BITS:
        raise ValueError(
            f"RSA key of {private.key_size} bits; at least {RSA_MIN_BITS} are required"
        )
    try:
        return SigningKey.from_private_pem(algorithm, pem)
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"unusable key for {algorithm}: {exc.__class__.__name__}") from None


def load_private_key(algorithm: str, path: Path, variable: str) -> SigningKey:
    """The key in the PEM file ``path``; a one-line ConfigError naming ``variable`` otherwise."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        return key_from_pem(algorithm, pem)
    except ValueError as exc:
        raise ConfigError(f"{variable}: {path}: {exc}") from None


def _entries(value: str) -> list[str]:
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def load_previous_keys(settings: Settings) -> tuple[SigningKey, ...]:
    """Keys that still verify tokens (and are published) but no longer sign.

    Asymmetric algorithms read ``AUTH_JWT_PREVIOUS_KEY_FILES`` (PEM paths, same algorithm as the
    current key); HMAC reads ``AUTH_JWT_PREVIOUS_SECRETS``. Setting the variable that does not
    fit the configured algorithm is an error rather than silently ignored: the operator expects
    those old tokens to stay valid.
    """
    algorithm = settings.jwt_algorithm
    files = _entries(settings.jwt_previous_key_files)
    secrets = _entries(
        settings.jwt_previous_secrets.get_secret_value()
        if settings.jwt_previous_secrets is not None
        else ""
    )
    if algorithm in HMAC_ALGORITHMS:
        if files:
            raise ConfigError(
                f"{PREVIOUS_KEY_FILES_VARIABLE} needs an asymmetric AUTH_JWT_ALGORITHM, "
                f"not {algorithm}; use {PREVIOUS_SECRETS_VARIABLE}"
            )
        keys = []
        for position, secret in enumerate(secrets, start=1):
            raw = secret.encode()
            if len(raw) < MIN_SECRET_BYTES:
                raise ConfigError(
                    f"{PREVIOUS_SECRETS_VARIABLE}: entry {position} is {len(raw)} bytes; "
                    f"at least {MIN_SECRET_BYTES} are required"
                )
            keys.append(SigningKey.hmac(algorithm, raw))
        return _unique(keys)
    if secrets:
        raise ConfigError(
            f"{PREVIOUS_SECRETS_VARIABLE} needs an HMAC AUTH_JWT_ALGORITHM, "
            f"not {algorithm}; use {PREVIOUS_KEY_FILES_VARIABLE}"
        )
    return _unique(
        [load_private_key(algorithm, Path(path), PREVIOUS_KEY_FILES_VARIABLE) for path in files]
    )


def _unique(keys: list[SigningKey]) -> tuple[SigningKey, ...]:
    seen: set[str] = set()
    unique = []
    for key in keys:
        if key.kid not in seen:
            seen.add(key.kid)
            unique.append(key)
    return tuple(unique)


def jwks(settings: TokenSettings) -> dict[str, Any]:
    """The JWK Set: the current public key first, then the previous ones.

    HMAC keys have no public half and are never published: ``{"keys": []}``.
    """
    published: list[dict[str, Any]] = []
    kids: set[str] = set()
    for key in (settings.key, *settings.previous_keys):
        if key.public_jwk is not None and key.kid not in kids:
            kids.add(key.kid)
            published.append(dict(key.public_jwk))
    return {"keys": published}


def token_settings(settings: Settings) -> TokenSettings:
    """The signing key and token rules the settings name; a key that cannot be used is a
    one-line ConfigError."""
    algorithm = settings.jwt_algorithm
    if algorithm in HMAC_ALGORITHMS:
        key = SigningKey.hmac(algorithm, resolve_jwt_secret(settings))
    else:
        if settings.jwt_private_key_file is None:
            raise ConfigError(f"AUTH_JWT_ALGORITHM={algorithm} needs AUTH_JWT_PRIVATE_KEY_FILE")
        # load_private_key also turns a key of the wrong type (PyJWT's InvalidKeyError) or a
        # public-key PEM into the one-line ConfigError, not a traceback.
        key = load_private_key(
            algorithm, settings.jwt_private_key_file, "AUTH_JWT_PRIVATE_KEY_FILE"
        )
    return TokenSettings(
        key=key,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=settings.access_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
        leeway=settings.jwt_leeway,
        previous_keys=load_previous_keys(settings),
    )


# What a resource server accepts from a JWK Set: the asymmetric algorithms this service signs
# with, each bound to its key type (an "alg" that does not fit the key is refused, not guessed).
JWK_ALGORITHMS = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}


def keys_from_jwks(document: Any) -> tuple[SigningKey, ...]:
    """The verifying keys of a JWK Set (RFC 7517), for a resource server.

    Only signature keys of RS256, ES256 or EdDSA with a ``kid`` are taken; anything else in the
    set (encryption keys, symmetric keys, other algorithms, malformed entries) is skipped, so
    one odd entry never makes the set unusable. ValueError when the document is no JWK Set.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set (no 'keys' list)")
    keys: list[SigningKey] = []
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        algorithm, kid = entry.get("alg"), entry.get("kid")
        if (
            algorithm not in JWK_ALGORITHMS
            or entry.get("kty") != JWK_ALGORITHMS[algorithm]
            or not isinstance(kid, str)
            or not kid
            or entry.get("use", "sig") != "sig"
            or "d" in entry  # a private key published by mistake is not trusted either
        ):
            continue
        try:
            verifying = jwt.PyJWK(entry, algorithm).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        if isinstance(verifying, rsa.RSAPublicKey) and verifying.key_size < RSA_MIN_BITS:
            continue
        keys.append(SigningKey(algorithm, kid, None, verifying, dict(entry)))
    return _unique(keys)
