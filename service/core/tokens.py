"""JWT encoding and verification: pure functions over PyJWT, no web framework, no database.

Time is injectable (``now``) so expiry is tested without sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import jwt
from jwt.algorithms import get_default_algorithms

from service.core.errors import TokenExpired, TokenInvalid, WrongTokenType

TokenType = Literal["access", "refresh"]
REQUIRED_CLAIMS = ("exp", "iat", "sub", "jti", "type", "iss", "aud")
MAX_TOKEN_LENGTH = 8 * 1024
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
# The latest instant a time claim may name: 9999-12-31T23:59:59Z (RFC 7519 NumericDate is
# unbounded, but anything later is no real time, and beyond 2**1024 a float overflows).
MAX_NUMERIC_DATE = 253_402_300_799


@dataclass(frozen=True)
class SigningKey:
    """One key: ``kid`` is the RFC 7638 thumbprint of its public (or, for HMAC, secret) JWK."""

    algorithm: str
    kid: str
    signing: Any
    verifying: Any
    public_jwk: dict[str, Any] | None

    @classmethod
    def hmac(cls, algorithm: str, secret: bytes) -> SigningKey:
        jwk = {"k": _b64(secret), "kty": "oct"}
        return cls(algorithm, rfc7638_thumbprint(jwk), secret, secret, None)

    @classmethod
    def from_private_pem(cls, algorithm: str, pem: bytes) -> SigningKey:
        implementation = get_default_algorithms()[algorithm]
        private = implementation.prepare_key(pem)
        public = private.public_key()
        jwk: dict[str, Any] = json.loads(implementation.to_jwk(public))
        kid = rfc7638_thumbprint(jwk)
        # RFC 7517 §4.3: "use" and "key_ops" should not appear together; keep "use".
        jwk.pop("key_ops", None)
        jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
        return cls(algorithm, kid, private, public, jwk)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rfc7638_thumbprint(jwk: dict[str, Any]) -> str:
    required = {
        "oct": ("k", "kty"),
        "RSA": ("e", "kty", "n"),
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
    }[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in required}, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True)
class TokenSettings:
    key: SigningKey
    issuer: str
    audience: str
    access_ttl: int
    refresh_ttl: int
    leeway: int = 30
    previous_keys: Sequence[SigningKey] = ()


@dataclass(frozen=True)
class Claims:
    subject: str
    token_type: TokenType
    jti: str
    issued_at: int
    expires_at: int
    fresh: bool
    roles: tuple[str, ...]
    # Read-only: a verified token's claims are remembered and shared by its later requests.
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def session_id(self) -> str | None:
        """``sid``: the refresh family (login session) the token belongs to."""
        value = self.raw.get("sid")
        return value if isinstance(value, str) else None

    @property
    def session_uuid(self) -> uuid.UUID | None:
        """``session_id`` as the UUID the refresh families are keyed by (None if not one)."""
        value = self.session_id
        try:
            return uuid.UUID(value) if value else None
        except ValueError:
            return None

    @property
    def csrf(self) -> str | None:
        value = self.raw.get("csrf")
        return value if isinstance(value, str) else None

    def csrf_matches(self, sent: object) -> bool:
        """Whether ``sent`` (a header or form value) echoes the ``csrf`` claim, in constant time."""
        expected = self.csrf
        if not expected or not isinstance(sent, str) or not sent:
            return False
        return secrets.compare_digest(sent.encode(), expected.encode())

    @property
    def client_id(self) -> str | None:
        """``client_id``: on a machine client's token (client credentials), never a user's."""
        value = self.raw.get("client_id")
        return value if isinstance(value, str) else None

    @property
    def scopes(self) -> frozenset[str]:
        """``scope`` (RFC 8693 §4.2: space-separated) as a set; empty when absent."""
        value = self.raw.get("scope")
        return frozenset(value.split()) if isinstance(value, str) else frozenset()

    @property
    def amr(self) -> tuple[str, ...]:
        """``amr`` (RFC 8176): how the login that started the session was authenticated."""
        value = self.raw.get("amr")
        if not isinstance(value, list):
            return ()
        return tuple(item for item in value if isinstance(item, str))

    @property
    def username(self) -> str | None:
        value = self.raw.get("username")
        return value if isinstance(value, str) else None

    @property
    def version(self) -> int:
        """``ver``: the user's token version when the token was issued (0 when absent)."""
        value = self.raw.get("ver", 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else -1


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: int


def encode_token(
    settings: TokenSettings,
    *,
    subject: str,
    token_type: TokenType,
    now: float | None = None,
    fresh: bool = False,
    roles: Sequence[str] = (),
    extra_claims: dict[str, Any] | None = None,
    ttl: int | None = None,
    jti: str | None = None,
    expires_at: int | None = None,
) -> IssuedToken:
    """Sign a token. ``jti`` and ``expires_at`` are for re-issuing a known token exactly."""
    issued_at = int(time.time() if now is None else now)
    if expires_at is None:
        default_ttl = settings.access_ttl if token_type == "access" else settings.refresh_ttl
        expires_at = issued_at + (ttl if ttl is not None else default_ttl)
    token_id = jti if jti is not None else uuid.uuid4().hex
    claims: dict[str, Any] = {**(extra_claims or {})}
    claims.update(
        {
            "iss": settings.issuer,
            "aud": settings.audience,
            "sub": subject,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires_at,
            "jti": token_id,
            "type": token_type,
            "fresh": fresh,
        }
    )
    if token_type == "access":
        claims["roles"] = list(roles)
    key = settings.key
    token = jwt.encode(
        claims, key.signing, algorithm=key.algorithm, headers={"kid": key.kid, "typ": "JWT"}
    )
    return IssuedToken(token=token, jti=token_id, expires_at=expires_at)


def decode_token(
    settings: TokenSettings,
    token: str,
    *,
    expected_type: TokenType,
    now: float | None = None,
) -> Claims:
    """Verify ``token``; return its claims or raise TokenInvalid, TokenExpired, WrongTokenType.

    The algorithm is pinned to the configured key's; keys named in the token (``jwk``, ``jku``,
    ``x5u``) are never used; ``kid`` only selects among the configured keys.
    """
    return expect_type(verify_token(settings, token, now=now), expected_type)


def verify_token(settings: TokenSettings, token: str, *, now: float | None = None) -> Claims:
    """Everything ``decode_token`` checks but the token's type."""
    clock = time.time() if now is None else now
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise TokenInvalid()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenInvalid() from exc
    if "crit" in header:
        raise TokenInvalid("The token names critical header extensions this service does not know.")
    key = _select_key(settings, header.get("kid"))
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            key.verifying,
            algorithms=[key.algorithm],
            audience=settings.audience,
            issuer=settings.issuer,
            leeway=settings.leeway,
            # Time claims are checked below against the injectable clock.
            options={
                "require": list(REQUIRED_CLAIMS),
                "strict_aud": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise TokenInvalid() from exc
    _check_time_types(payload)
    check_times(payload, clock, settings.leeway)
    return claims_from_payload(payload)


def _check_time_types(payload: dict[str, Any]) -> None:
    for name in ("exp", "iat", "nbf"):
        value = payload.get(name)
        if value is None and name == "nbf":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TokenInvalid(f"The '{name}' claim must be a number.")
        # JSON parsing gives NaN and Infinity for "NaN"/"Infinity", and ints of any size: none
        # of them is a time. NaN compares false with everything, so it fails this range too
        # (and would otherwise pass every later check); a huge int would overflow float().
        if not -MAX_NUMERIC_DATE <= value <= MAX_NUMERIC_DATE:
            raise TokenInvalid(f"The '{name}' claim is not a time.")


def check_times(payload: Mapping[str, Any], now: float, leeway: int) -> None:
    """The values of exp, iat and nbf against ``now`` (their types were checked on first sight)."""
    if float(payload["exp"]) <= now - leeway:
        raise TokenExpired()
    if float(payload["iat"]) > now + leeway:
        raise TokenInvalid("The token was issued in the future.")
    if payload.get("nbf") is not None and float(payload["nbf"]) > now + leeway:
        raise TokenInvalid("The token is not valid yet.")


def _select_key(settings: TokenSettings, kid: Any) -> SigningKey:
    keys = (settings.key, *settings.previous_keys)
    if kid is None and len(keys) == 1:
        return settings.key
    for key in keys:
        if isinstance(kid, str) and secrets.compare_digest(key.kid, kid):
            return key
    raise TokenInvalid("The token was not signed by a key of this service.")


def expect_type(claims: Claims, expected_type: TokenType) -> Claims:
    if claims.token_type != expected_type:
        raise WrongTokenType(
            f"This endpoint needs the {expected_type} token, not the {claims.token_type}."
        )
    return claims


def claims_from_payload(payload: dict[str, Any]) -> Claims:
    """The claims of a verified payload (TokenInvalid when a claim has the wrong type)."""
    token_type = payload["type"]
    if token_type not in ("access", "refresh"):
        raise TokenInvalid()
    subject, jti, roles = payload["sub"], payload["jti"], payload.get("roles", [])
    if not isinstance(subject, str) or not isinstance(jti, str) or not isinstance(roles, list):
        raise TokenInvalid()
    if not all(isinstance(role, str) for role in roles):
        raise TokenInvalid()
    return Claims(
        subject=subject,
        token_type=token_type,
        jti=jti,
        issued_at=int(payload["iat"]),
        expires_at=int(payload["exp"]),
        fresh=payload.get("fresh") is True,
        roles=tuple(roles),
        raw=MappingProxyType(payload),
    )
