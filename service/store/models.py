"""SQLAlchemy 2 typed models. The integer key ``pk`` never leaves the service; ``id`` is a UUID."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    Uuid,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(32))
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str | None] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Bumped by logout-everywhere, disabling and role removal: older tokens carry a lower `ver`.
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Whether a link sent to ``email`` was followed; false again whenever the address changes.
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Bumped by every email change: links sent to an earlier address (or earlier to the same
    # one) carry a lower version and are refused (service/accounts/email_flows.py).
    email_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        # Uniqueness is the database's job, on the lowered value: no check-then-insert race.
        Index("uq_users_username_lower", func.lower(username), unique=True),
        Index("uq_users_email_lower", func.lower(email), unique=True),
    )


class RefreshFamily(Base):
    """A login session (device): its refresh tokens rotate, only ``current_jti`` is live.

    Tokens themselves are never stored: only their ``jti``.
    """

    __tablename__ = "refresh_families"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid.uuid4)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk", ondelete="CASCADE"), index=True)
    current_jti: Mapped[str] = mapped_column(String(64))
    current_issued_at: Mapped[int] = mapped_column(Integer)
    previous_jti: Mapped[str | None] = mapped_column(String(64))
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    csrf: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    ip: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Indexed: every login prunes the families past their lifetime.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    # RFC 8176 ``amr`` of the login that started the session (["pwd"], ["pwd", "otp"],
    # ["hwk"], ...): every access token of the family carries it, refreshed ones too.
    amr: Mapped[list[str] | None] = mapped_column(JSON)


class RevokedToken(Base):
    """An access token revoked before its expiry (logout); pruned once it has expired."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Client(Base):
    """A machine client (OAuth2 client credentials). Its secret is high-entropy and random, so
    only its SHA-256 is kept (``service/accounts/clients.py``), never the secret itself."""

    __tablename__ = "clients"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(32))
    secret_hash: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("uq_clients_name_lower", func.lower(name), unique=True),)


class OutboxMessage(Base):
    """A rendered email waiting to be delivered (``service/accounts/mail.py``).

    Added in the transaction of the change that causes it, so it exists exactly when that change
    was committed. ``next_attempt_at`` is NULL once the message is done: sent (``sent_at``) or
    given up (``failed_at``, with ``last_error``). A sender owns a message while
    ``claimed_until`` is in the future and ``claim`` is its token; the body is blanked once the
    message is done, as it may hold a live link.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(998))
    # The whole RFC 5322 message as queued (headers, text and HTML parts): a retry sends the
    # same bytes, Message-ID and Date included.
    message: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim: Mapped[str | None] = mapped_column(String(32))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        # The senders' poll looks only at messages still to deliver.
        Index(
            "ix_outbox_pending",
            next_attempt_at,
            sqlite_where=next_attempt_at.is_not(None),
            postgresql_where=next_attempt_at.is_not(None),
        ),
    )


class TotpFactor(Base):
    """A user's TOTP authenticator (RFC 6238). ``secret`` is sealed (``service/core/secretbox.py``),
    never stored in plain text. Set up but not yet confirmed while ``confirmed_at`` is NULL (a
    new setup replaces an unconfirmed one). ``last_step`` is the time step of the last accepted
    code: a code is accepted only for a later step, by one conditional UPDATE, so no code works
    twice (RFC 6238 §5.2), not even in two concurrent requests."""

    __tablename__ = "mfa_totp"

    user_pk: Mapped[int] = mapped_column(
        ForeignKey("users.pk", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_step: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class RecoveryCode(Base):
    """One single-use recovery code, kept only as a keyed hash; a new set replaces the old."""

    __tablename__ = "mfa_recovery_codes"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Passkey(Base):
    """A WebAuthn credential (passkey) registered by a user; its user handle is ``users.id``."""

    __tablename__ = "passkeys"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid.uuid4)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk", ondelete="CASCADE"), index=True)
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(1023), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    transports: Mapped[list[str]] = mapped_column(JSON, default=list)
    aaguid: Mapped[str | None] = mapped_column(String(36))
    # "single_device" or "multi_device" (synced); backed_up: whether it is synced now.
    device_type: Mapped[str | None] = mapped_column(String(16))
    backed_up: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuthChallenge(Base):
    """A short-lived, single-use server-side challenge: an ``mfa_token`` (kind ``mfa``, its
    SHA-256 in ``handle``), or a WebAuthn challenge (kinds ``passkey-register``,
    ``passkey-login``, ``passkey-mfa``). Spent by one conditional UPDATE of ``used_at``.
    ``user_pk`` is NULL for a passwordless login's challenge (no user is known yet); ``data``
    holds what the challenge is bound to (the login that made an mfa_token, the WebAuthn
    challenge bytes)."""

    __tablename__ = "auth_challenges"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    handle: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    user_pk: Mapped[int | None] = mapped_column(ForeignKey("users.pk", ondelete="CASCADE"))
    data: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Indexed: logins prune the challenges past their lifetime.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
