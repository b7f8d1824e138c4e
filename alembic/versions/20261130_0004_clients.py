"""machine clients (OAuth2 client credentials)

Revision ID: 0004_clients
Revises: 0003_family_expiry_index
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_clients"
down_revision: str | Sequence[str] | None = "0003_family_expiry_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=128), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("secret_rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_clients")),
        sa.UniqueConstraint("client_id", name=op.f("uq_clients_client_id")),
    )
    # Names are unique in any letter case, like usernames: on the lowered value.
    op.create_index("uq_clients_name_lower", "clients", [sa.text("lower(name)")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_clients_name_lower", table_name="clients")
    op.drop_table("clients")
