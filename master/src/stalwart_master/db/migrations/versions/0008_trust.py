"""trust: agent-bound and API tokens, workspaces, projects, roles and the audit log

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("agent_id", sa.String(length=128), nullable=True))
    op.create_index("ix_tokens_agent_id", "tokens", ["agent_id"])
    op.add_column("tokens", sa.Column("description", sa.Text(), server_default="", nullable=False))
    op.add_column("tokens", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    op.alter_column("tokens", "expires_at", nullable=True)
    # Agent tokens from before were good for any agent id: they cannot be narrowed after the fact.
    op.execute("UPDATE tokens SET revoked_at = now() WHERE kind = 'agent' AND revoked_at IS NULL")

    op.create_table(
        "workspaces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("archived", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_workspaces_user_id_users", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_workspaces"),
        sa.UniqueConstraint("name", name="uq_workspaces_name"),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("archived", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name="fk_projects_workspace_id_workspaces"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_projects_user_id_users", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
        sa.UniqueConstraint("workspace_id", "name", name="uq_projects_workspace_id_name"),
    )
    op.create_index("ix_projects_workspace_id", "projects", ["workspace_id"])
    op.create_table(
        "workspace_members",
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.CheckConstraint("role IN ('viewer', 'editor', 'admin')", name="ck_workspace_members_role_valid"),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name="fk_workspace_members_workspace_id_workspaces",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_workspace_members_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("workspace_id", "user_id", name="pk_workspace_members"),
    )
    op.create_index("ix_workspace_members_user_id", "workspace_members", ["user_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(length=128), server_default="", nullable=False),
        sa.Column("credential", sa.String(length=16), server_default="", nullable=False),
        sa.Column("address", sa.String(length=64), server_default="", nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), server_default="", nullable=False),
        sa.Column("target_id", sa.String(length=128), server_default="", nullable=False),
        sa.Column("outcome", sa.String(length=16), server_default="ok", nullable=False),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_user_id", "audit_events", ["user_id"])
    op.create_index("ix_audit_events_action", "audit_events", ["action"])

    # The default workspace and project everything made before now lives in; every existing user
    # keeps what they had: they see it all and change their own.
    op.execute("INSERT INTO workspaces (id, name) VALUES (1, 'Uncategorized')")
    op.execute("INSERT INTO projects (id, workspace_id, name) VALUES (1, 1, 'Uncategorized')")
    op.execute("SELECT setval(pg_get_serial_sequence('workspaces', 'id'), 1)")
    op.execute("SELECT setval(pg_get_serial_sequence('projects', 'id'), 1)")
    op.execute(
        "INSERT INTO workspace_members (workspace_id, user_id, role) SELECT 1, id, 'editor' FROM users"
    )
    for table in ("experiments", "models"):
        op.add_column(table, sa.Column("project_id", sa.Integer(), server_default="1", nullable=False))
        op.create_index(f"ix_{table}_project_id", table, ["project_id"])
        op.create_foreign_key(f"fk_{table}_project_id_projects", table, "projects", ["project_id"], ["id"])


def downgrade() -> None:
    for table in ("models", "experiments"):
        op.drop_constraint(f"fk_{table}_project_id_projects", table, type_="foreignkey")
        op.drop_index(f"ix_{table}_project_id", table_name=table)
        op.drop_column(table, "project_id")
    op.drop_table("audit_events")
    op.drop_table("workspace_members")
    op.drop_table("projects")
    op.drop_table("workspaces")
    op.execute("UPDATE tokens SET expires_at = now() WHERE expires_at IS NULL")
    op.alter_column("tokens", "expires_at", nullable=False)
    op.drop_column("tokens", "last_used_at")
    op.drop_column("tokens", "description")
    op.drop_index("ix_tokens_agent_id", table_name="tokens")
    op.drop_column("tokens", "agent_id")
