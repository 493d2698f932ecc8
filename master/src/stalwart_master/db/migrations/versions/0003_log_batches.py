"""log batches

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_batches",
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("allocation_id", sa.Uuid(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["allocation_id"],
            ["allocations.id"],
            name=op.f("fk_log_batches_allocation_id_allocations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_log_batches")),
    )
    op.create_index(op.f("ix_log_batches_allocation_id"), "log_batches", ["allocation_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_log_batches_allocation_id"), table_name="log_batches")
    op.drop_table("log_batches")
