"""index refresh_families.expires_at (pruned at every login)

Revision ID: 0003_family_expiry_index
Revises: 0002_token_lifecycle
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003_family_expiry_index"
down_revision: str | Sequence[str] | None = "0002_token_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_refresh_families_expires_at"), "refresh_families", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_refresh_families_expires_at"), table_name="refresh_families")
