"""fault tolerance: preemption deadlines, restored checkpoints, archived metric rows

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("allocations", sa.Column("preempt_requested_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("allocations", sa.Column("restored_checkpoint", sa.Uuid(), nullable=True))
    # Runs already asked to stop get their preemption_timeout from now on.
    op.execute(
        "UPDATE allocations SET preempt_requested_at = now() "
        "WHERE preempt_requested AND state <> 'TERMINATED'"
    )
    op.add_column("metrics", sa.Column("archived", sa.Boolean(), server_default="false", nullable=False))
    # Before the rule existed a restarted run could report a step again: the newest run's row stays live.
    op.execute(
        """
        UPDATE metrics AS m SET archived = true
        WHERE EXISTS (
            SELECT 1 FROM metrics AS n
            WHERE n.trial_id = m.trial_id AND n."group" = m."group"
              AND n.steps_completed = m.steps_completed AND n.run_id > m.run_id
        )
        """
    )
    op.create_index(
        "uq_metrics_live_trial_group_steps",
        "metrics",
        ["trial_id", "group", "steps_completed"],
        unique=True,
        postgresql_where=sa.text("NOT archived"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_metrics_live_trial_group_steps", table_name="metrics", postgresql_where=sa.text("NOT archived")
    )
    op.drop_column("metrics", "archived")
    op.drop_column("allocations", "restored_checkpoint")
    op.drop_column("allocations", "preempt_requested_at")
