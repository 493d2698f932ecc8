"""agents, slots, trials, allocations, metrics, checkpoints, logs

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("resource_pool", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), server_default="", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("draining", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("connected", sa.Boolean(), server_default="true", nullable=False),
        sa.Column(
            "registered_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
    )
    op.create_table(
        "slots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("uuid", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), server_default="", nullable=False),
        sa.Column("memory_mb", sa.Integer(), server_default="0", nullable=False),
        sa.Column("present", sa.Boolean(), server_default="true", nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_slots_agent_id_agents"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slots")),
        sa.UniqueConstraint("agent_id", "index", name="uq_slots_agent_id_index"),
    )
    op.create_index(op.f("ix_slots_agent_id"), "slots", ["agent_id"], unique=False)
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("hparams", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("restarts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("run_id", sa.Integer(), server_default="0", nullable=False),
        sa.Column("steps_completed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("progress", sa.Float(), server_default="0", nullable=False),
        sa.Column("latest_checkpoint", sa.Uuid(), nullable=True),
        sa.Column("best_validation", sa.Float(), nullable=True),
        sa.Column("searcher_metric", sa.Float(), nullable=True),
        sa.Column("end_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('ACTIVE', 'PAUSED', 'STOPPING_CANCELED', 'STOPPING_KILLED', 'STOPPING_COMPLETED', 'STOPPING_ERROR', 'COMPLETED', 'CANCELED', 'ERROR')",
            name=op.f("ck_trials_state_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_trials_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trials")),
        sa.UniqueConstraint("experiment_id", "request_id", name="uq_trials_experiment_id_request_id"),
    )
    op.create_index(op.f("ix_trials_experiment_id"), "trials", ["experiment_id"], unique=False)
    op.create_index(op.f("ix_trials_state"), "trials", ["state"], unique=False)
    op.create_table(
        "allocations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=True),
        sa.Column("resource_pool", sa.String(length=128), nullable=False),
        sa.Column("slots_needed", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("delivered", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("kill_requested", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("kill_delivered", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("preempt_requested", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("preempt_acked", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("exit_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('PENDING', 'ASSIGNED', 'RUNNING', 'TERMINATED')",
            name=op.f("ck_allocations_state_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_allocations_agent_id_agents"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_allocations_trial_id_trials"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_allocations")),
    )
    op.create_index(op.f("ix_allocations_agent_id"), "allocations", ["agent_id"], unique=False)
    op.create_index(op.f("ix_allocations_state"), "allocations", ["state"], unique=False)
    op.create_index(op.f("ix_allocations_trial_id"), "allocations", ["trial_id"], unique=False)
    op.create_table(
        "metric_batches",
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_metric_batches_trial_id_trials"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_metric_batches")),
    )
    op.create_index(op.f("ix_metric_batches_trial_id"), "metric_batches", ["trial_id"], unique=False)
    op.create_table(
        "metrics",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("group", sa.String(length=64), nullable=False),
        sa.Column("steps_completed", sa.BigInteger(), nullable=False),
        sa.Column("values", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_metrics_trial_id_trials"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metrics")),
        sa.UniqueConstraint(
            "trial_id", "group", "steps_completed", "run_id", name="uq_metrics_trial_group_steps_run"
        ),
    )
    op.create_table(
        "trial_logs",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("allocation_id", sa.Uuid(), nullable=True),
        sa.Column("rank", sa.Integer(), server_default="0", nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_trial_logs_trial_id_trials"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trial_logs")),
    )
    op.create_index("ix_trial_logs_trial_id_id", "trial_logs", ["trial_id", "id"], unique=False)
    op.create_table(
        "allocation_slots",
        sa.Column("allocation_id", sa.Uuid(), nullable=False),
        sa.Column("slot_id", sa.Integer(), nullable=False),
        sa.Column("released", sa.Boolean(), server_default="false", nullable=False),
        sa.ForeignKeyConstraint(
            ["allocation_id"],
            ["allocations.id"],
            name=op.f("fk_allocation_slots_allocation_id_allocations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["slot_id"], ["slots.id"], name=op.f("fk_allocation_slots_slot_id_slots"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("allocation_id", "slot_id", name=op.f("pk_allocation_slots")),
    )
    op.create_index(
        "uq_allocation_slots_held_slot_id",
        "allocation_slots",
        ["slot_id"],
        unique=True,
        postgresql_where=sa.text("NOT released"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("uuid", sa.Uuid(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("allocation_id", sa.Uuid(), nullable=True),
        sa.Column("steps_completed", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("storage", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("manifest", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("parent_uuid", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["allocation_id"],
            ["allocations.id"],
            name=op.f("fk_checkpoints_allocation_id_allocations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_checkpoints_trial_id_trials"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_checkpoints")),
    )
    op.create_index(op.f("ix_checkpoints_trial_id"), "checkpoints", ["trial_id"], unique=False)
    op.add_column("tokens", sa.Column("allocation_id", sa.Uuid(), nullable=True))
    op.create_index(op.f("ix_tokens_allocation_id"), "tokens", ["allocation_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_tokens_allocation_id_allocations"),
        "tokens",
        "allocations",
        ["allocation_id"],
        ["id"],
        ondelete="CASCADE",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_tokens_allocation_id_allocations"), "tokens", type_="foreignkey")
    op.drop_index(op.f("ix_tokens_allocation_id"), table_name="tokens")
    op.drop_column("tokens", "allocation_id")
    op.drop_index(op.f("ix_checkpoints_trial_id"), table_name="checkpoints")
    op.drop_table("checkpoints")
    op.drop_index(
        "uq_allocation_slots_held_slot_id",
        table_name="allocation_slots",
        postgresql_where=sa.text("NOT released"),
    )
    op.drop_table("allocation_slots")
    op.drop_index("ix_trial_logs_trial_id_id", table_name="trial_logs")
    op.drop_table("trial_logs")
    op.drop_table("metrics")
    op.drop_index(op.f("ix_metric_batches_trial_id"), table_name="metric_batches")
    op.drop_table("metric_batches")
    op.drop_index(op.f("ix_allocations_trial_id"), table_name="allocations")
    op.drop_index(op.f("ix_allocations_state"), table_name="allocations")
    op.drop_index(op.f("ix_allocations_agent_id"), table_name="allocations")
    op.drop_table("allocations")
    op.drop_index(op.f("ix_trials_state"), table_name="trials")
    op.drop_index(op.f("ix_trials_experiment_id"), table_name="trials")
    op.drop_table("trials")
    op.drop_index(op.f("ix_slots_agent_id"), table_name="slots")
    op.drop_table("slots")
    op.drop_table("agents")
