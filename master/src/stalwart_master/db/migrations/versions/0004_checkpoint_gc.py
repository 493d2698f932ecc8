"""checkpoint states and garbage collection requests

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("checkpoints", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("checkpoints", sa.Column("corrupt_reason", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_checkpoints_state_valid"), "checkpoints", "state IN ('COMPLETED', 'DELETED', 'CORRUPTED')"
    )
    # The composite index serves every lookup the trial_id index did, and GC's "newest per trial".
    op.drop_index(op.f("ix_checkpoints_trial_id"), table_name="checkpoints")
    op.create_index(
        "ix_checkpoints_trial_id_steps_completed",
        "checkpoints",
        ["trial_id", "steps_completed"],
        unique=False,
    )
    op.create_table(
        "gc_requests",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_uuids", sa.ARRAY(sa.Uuid()), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_gc_requests_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gc_requests")),
    )
    op.create_index(op.f("ix_gc_requests_experiment_id"), "gc_requests", ["experiment_id"], unique=False)
    op.create_index(
        "ix_gc_requests_pending",
        "gc_requests",
        ["id"],
        unique=False,
        postgresql_where=sa.text("done_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_gc_requests_pending", table_name="gc_requests", postgresql_where=sa.text("done_at IS NULL")
    )
    op.drop_index(op.f("ix_gc_requests_experiment_id"), table_name="gc_requests")
    op.drop_table("gc_requests")
    op.drop_index("ix_checkpoints_trial_id_steps_completed", table_name="checkpoints")
    op.create_index(op.f("ix_checkpoints_trial_id"), "checkpoints", ["trial_id"], unique=False)
    op.drop_constraint(op.f("ck_checkpoints_state_valid"), "checkpoints", type_="check")
    op.drop_column("checkpoints", "corrupt_reason")
    op.drop_column("checkpoints", "deleted_at")
