"""token lifecycle: refresh families, revoked access tokens, per-user token version

Revision ID: 0002_token_lifecycle
Revises: 0001_create_users
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_token_lifecycle"
down_revision: str | Sequence[str] | None = "0001_create_users"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_tokens")),
    )
    op.create_index(
        op.f("ix_revoked_tokens_expires_at"), "revoked_tokens", ["expires_at"], unique=False
    )
    op.create_table(
        "refresh_families",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("current_jti", sa.String(length=64), nullable=False),
        sa.Column("current_issued_at", sa.Integer(), nullable=False),
        sa.Column("previous_jti", sa.String(length=64), nullable=True),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("csrf", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=255), nullable=True),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_refresh_families")),
        sa.UniqueConstraint("id", name=op.f("uq_refresh_families_id")),
        sa.ForeignKeyConstraint(
            ["user_pk"],
            ["users.pk"],
            name=op.f("fk_refresh_families_user_pk_users"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        op.f("ix_refresh_families_user_pk"), "refresh_families", ["user_pk"], unique=False
    )
    # A plain ADD COLUMN (no batch copy): the table keeps its expression indexes untouched.
    op.add_column(
        "users",
        sa.Column("token_version", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("token_version")
    op.drop_index(op.f("ix_refresh_families_user_pk"), table_name="refresh_families")
    op.drop_table("refresh_families")
    op.drop_index(op.f("ix_revoked_tokens_expires_at"), table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
