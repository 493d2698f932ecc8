"""search: a run records the early exit its trial reported (InvalidHP and the like)

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("allocations", sa.Column("early_exit", sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column("allocations", "early_exit")
