"""Settings, read once from ``AUTH_*`` environment variables and ``.env``."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "production", "testing"]
Algorithm = Literal["HS256", "HS512", "RS256", "ES256", "EdDSA"]

MIN_SECRET_BYTES = 32
SECRET_FILE_NAME = "jwt_secret"


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUTH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    env: Environment = "development"
    database_url: str = "sqlite+aiosqlite:///./instance/auth.db"
    jwt_secret: SecretStr | None = None
    jwt_algorithm: Algorithm = "HS256"
    jwt_private_key_file: Path | None = None
    jwt_issuer: str = "auth-service"
    jwt_audience: str = "auth-service"
    access_token_ttl: int = Field(default=900, gt=0)
    refresh_token_ttl: int = Field(default=1_209_600, gt=0)
    redis_url: str | None = None
    redis_prefix: str = Field(default="auth-service", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

    # Key rotation: keys that still verify (and are published in the JWKS) but no longer sign.
    # Comma-separated: PEM file paths for asymmetric algorithms, secrets for HMAC.
    jwt_previous_key_files: str = ""
    jwt_previous_secrets: SecretStr | None = None

    # Token lifecycle.
    refresh_reuse_grace_seconds: int = Field(default=10, ge=0, le=300)
    refresh_family_ttl: int = Field(default=30 * 24 * 3600, gt=0)
    cookie_secure: bool | None = None
    allowed_origins: str = ""

    # Failed-login throttling (`limits` notation, windows separated by ";").
    throttle_enabled: bool = True
    throttle_account_limits: str = "5/minute;10/10 minutes;20/hour"
    throttle_ip_limits: str = "30/minute;300/hour"
    throttle_refresh_limits: str = "60/minute"

    # The contract's second round ("Settings added").
    public_url: str = "http://127.0.0.1:8000"
    cors_origins: str = ""
    # Resource-server mode: verify with the service's JWKS, and/or ask its /introspect.
    jwks_url: str | None = None
    introspection_url: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None

    # Mail: verification and password reset (the contract's second round).
    smtp_url: SecretStr | None = None  # smtp://[user:password@]host:port or smtps://...
    mail_from: str = "auth-service@localhost"
    require_verified_email: bool = False
    reset_token_ttl: int = Field(default=1800, gt=0)
    verify_token_ttl: int = Field(default=86_400, gt=0)

    # The second factor (TOTP, recovery codes, passkeys). TOTP secrets are stored encrypted
    # with AUTH_MFA_KEY (at least 32 bytes), or, when it is unset, with a key derived from the
    # JWT secret (rotating that secret then makes enrolled authenticator apps useless: set
    # AUTH_MFA_KEY to rotate them independently). An ``mfa_token`` lives at most 5 minutes;
    # a WebAuthn challenge as long as ``passkey_challenge_ttl``.
    mfa_key: SecretStr | None = None
    mfa_token_ttl: int = Field(default=300, gt=0, le=300)
    passkey_challenge_ttl: int = Field(default=300, gt=0, le=600)

    # Operations: GET /metrics needs Bearer <AUTH_METRICS_TOKEN> when set (else loopback only).
    metrics_token: SecretStr | None = None

    # Not in the contract's table: the team's own knobs, documented in the README.
    # AUTH_MAIL_ENABLED=false: no mail at all (production may then run without AUTH_SMTP_URL);
    # the mail routes answer 503.
    mail_enabled: bool = True
    # "text" (the default) or "json": one JSON object per line for the application, audit and
    # access logs, each with the request id.
    log_format: Literal["text", "json"] = "text"
    # How often an open WebSocket's token is checked again when no message passes (the
    # contract: a revoked token's socket is closed within 30 s at most).
    websocket_recheck_seconds: float = Field(default=10.0, gt=0, le=30)
    instance_path: Path = Path("instance")
    auto_migrate: bool = True
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    jwt_leeway: int = Field(default=30, ge=0, le=30)
    hash_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, gt=0)
    hash_queue: int = Field(default=0, ge=0)  # 0: no cap on the count (admission is by time)
    # Seconds a hash may expect to wait for a thread before it is shed (503): a common client
    # and proxy timeout is 30-60 s, and a login answered after its client gave up is wasted.
    hash_max_wait: float = Field(default=30.0, gt=0)
    hash_nice: int = Field(default=10, ge=0, le=19)  # hashing threads' niceness above the process
    argon2_memory_cost: int = Field(default=65_536, ge=8)
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_parallelism: int = Field(default=4, ge=1)
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0)
    db_pool_size: int = Field(default=10, gt=0)
    db_pool_timeout: float = Field(default=10.0, gt=0)
    ready_timeout: float = Field(default=2.0, gt=0)
    shutdown_drain_seconds: float = Field(default=30.0, ge=0)
    gc_tuning: bool = True  # the served app freezes its start-up heap (service/ops/runtime.py)
    # Resource-server mode: how long fetched keys are trusted before they are fetched again, the
    # least time between two fetches for an unknown ``kid``, and how long an introspection
    # answer is reused (0: ask on every request).
    jwks_cache_seconds: float = Field(default=300.0, gt=0)
    jwks_min_refetch_seconds: float = Field(default=5.0, ge=0)
    introspection_cache_seconds: float = Field(default=0.0, ge=0)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("use sqlite+aiosqlite:// or postgresql+asyncpg://")
        if is_in_memory_sqlite(value):
            raise ValueError(
                "an in-memory SQLite database is not supported; "
                "use a file, e.g. sqlite+aiosqlite:///./instance/auth.db"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        return _http_url(value, query_allowed=False).rstrip("/")

    @field_validator("jwks_url", "introspection_url")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else _http_url(value.strip())

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        parse_smtp_url(value.get_secret_value().strip())  # the message never repeats the URL
        return SecretStr(value.get_secret_value().strip())

    @field_validator("mfa_key")
    @classmethod
    def _mfa_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        size = len(value.get_secret_value().encode())
        if size < MIN_SECRET_BYTES:
            raise ValueError(f"it is {size} bytes; at least {MIN_SECRET_BYTES} are required")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins(cls, value: str) -> str:
        origins = [entry.strip() for entry in value.split(",") if entry.strip()]
        for origin in origins:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
                or "@" in parts.netloc
            ):
                raise ValueError(
                    f"{origin!r} is not an origin: use scheme://host[:port], or * for any"
                )
        if "*" in origins and len(origins) > 1:
            raise ValueError("* already means every origin; list origins or *, not both")
        return ",".join(_origin(entry) for entry in origins)

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        """``AUTH_CORS_ORIGINS`` as a tuple; ``("*",)`` for any origin, ``()`` for none."""
        return tuple(entry for entry in self.cors_origins.split(",") if entry)

    @property
    def resource_server(self) -> bool:
        """Whether the settings name a service to verify tokens with (resource-server mode)."""
        return self.jwks_url is not None or self.introspection_url is not None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def secure_cookies(self) -> bool:
        return self.cookie_secure if self.cookie_secure is not None else self.env != "development"


@dataclass(frozen=True)
class SMTPServer:
    """``AUTH_SMTP_URL`` taken apart. ``tls``: TLS from the first byte (smtps://); otherwise
    STARTTLS whenever the server offers it."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


SMTP_URL_FORM = "smtp://[user:password@]host:port or smtps://[user:password@]host:port"


def parse_smtp_url(url: str) -> SMTPServer:
    """The server named by ``url``; ValueError (never quoting the URL, which may hold a
    password) when it is not of the form ``SMTP_URL_FORM``. The port defaults to 25 (smtp) and
    465 (smtps)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"not a URL with a valid port; use {SMTP_URL_FORM}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise ValueError(f"the scheme must be smtp or smtps; use {SMTP_URL_FORM}")
    if not parts.hostname:
        raise ValueError(f"no host; use {SMTP_URL_FORM}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"no path, query or fragment; use {SMTP_URL_FORM}")
    if port == 0:
        raise ValueError(f"port 0 is not a port; use {SMTP_URL_FORM}")
    if parts.password is not None and not parts.username:
        raise ValueError(f"a password without a user; use {SMTP_URL_FORM}")
    return SMTPServer(
        host=parts.hostname,
        port=port if port is not None else (465 if scheme == "smtps" else 25),
        tls=scheme == "smtps",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _origin(entry: str) -> str:
    """An origin as a browser sends it: lower case, no trailing slash, no default port."""
    if entry == "*":
        return entry
    parts = urlsplit(entry.rstrip("/"))
    netloc = parts.netloc.lower()
    default_port = {"http": ":80", "https": ":443"}[parts.scheme.lower()]
    return f"{parts.scheme.lower()}://{netloc.removesuffix(default_port)}"


def _http_url(value: str, *, query_allowed: bool = True) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    if parts.fragment or (parts.query and not query_allowed) or "@" in parts.netloc:
        raise ValueError(f"{value!r}: use scheme://host[:port][/path], no query or user")
    return value


def is_in_memory_sqlite(url: str) -> bool:
    """``sqlite+aiosqlite://``, ``…:///:memory:`` or a ``file:`` URI in memory.

    Refused rather than supported: each connection to ``:memory:`` is a database of its own, so
    the reader and writer engines (and every pooled connection) would each see another one; one
    shared connection (StaticPool) instead would run every request's transaction on the one
    connection, interleaved, where one request's rollback undoes another's writes. Each worker
    of ``service.serve`` would also hold its own users, gone at exit, and the revocation epoch
    that lets workers cache token subjects lives in a file beside the database. Tests use a
    temporary file, which costs little more.
    """
    if not url.startswith("sqlite"):
        return False
    path, _, query = url.partition("://")[2].partition("?")
    database = path.removeprefix("/")
    return (
        database in ("", ":memory:")
        or database.startswith("file::memory:")
        or "memory" in parse_qs(query).get("mode", [])
    )


def resolve_jwt_secret(settings: Settings) -> bytes:
    """The HMAC key: configured, or (outside production) generated once into the instance folder.

    Production never generates one: a missing or short secret is a ConfigError.
    """
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value().encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"AUTH_JWT_SECRET is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are required"
            )
        return secret
    if settings.env == "production":
        raise ConfigError(
            f"AUTH_ENV=production needs AUTH_JWT_SECRET of at least {MIN_SECRET_BYTES} bytes"
        )
    if settings.env == "testing":
        return secrets.token_urlsafe(48).encode()
    return _instance_secret(settings.instance_path / SECRET_FILE_NAME)


def _instance_secret(path: Path) -> bytes:
    # A folder that is a file, lies under one, or cannot be written: one line, no traceback.
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"AUTH_INSTANCE_PATH={path.parent} is not a folder")
    try:
        if not path.exists():
            _generate_secret(path)
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            f"AUTH_INSTANCE_PATH={path.parent}: cannot keep the JWT secret {path.name} there: "
            f"{exc.strerror or exc}"
        ) from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{path} holds a secret shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def _generate_secret(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_urlsafe(48).encode() + b"\n")
    try:
        # link() creates the name only if it is absent: of two processes starting
        # together, both end up reading the one secret that won.
        os.link(staged, path)
    except FileExistsError:
        pass
    finally:
        staged.unlink()


def load_settings() -> Settings:
    """Settings from the environment; a bad value is a one-line ConfigError."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"AUTH_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(problems) from None
