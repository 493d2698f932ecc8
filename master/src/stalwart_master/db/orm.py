"""ORM models. Every change here needs an Alembic migration; a test compares the two."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names keep migrations and the schema dump stable.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

EXPERIMENT_STATES = (
    "ACTIVE",
    "PAUSED",
    "STOPPING_CANCELED",
    "STOPPING_KILLED",
    "STOPPING_COMPLETED",
    "STOPPING_ERROR",
    "COMPLETED",
    "CANCELED",
    "ERROR",
    "DELETING",
    "DELETE_FAILED",
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: DateTime(timezone=True), dict[str, Any]: JSONB}


class Cluster(Base):
    """One row: the identity of this installation, so clients can tell two masters apart."""

    __tablename__ = "cluster"

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True, default=uuid4)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class Token(Base):
    """A bearer token; only the SHA-256 of the secret is kept, so a leaked table grants nothing."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="user", server_default="user")
    # Set for kind "allocation": the one run of one trial this token may act for.
    allocation_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("allocations.id", ondelete="CASCADE"), index=True
    )
    # Set for kind "agent": the one agent id this credential may register and act as.
    agent_id: Mapped[str | None] = mapped_column(String(128), index=True)
    # A person's label for an API token ("ci", "notebook"); shown in `stalwart token list`.
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    # NULL for API tokens made without an expiry; every other kind always expires.
    expires_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]

    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)


WORKSPACE_ROLES = ("viewer", "editor", "admin")
DEFAULT_WORKSPACE_ID = 1
DEFAULT_PROJECT_ID = 1


class Workspace(Base):
    """A team's space: its members' roles decide who sees and changes what is inside."""

    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class Project(Base):
    """A folder of experiments and models inside a workspace."""

    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_projects_workspace_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class WorkspaceMember(Base):
    """A user's role in one workspace: viewer reads, editor also creates and changes their own
    objects, admin changes everything inside and manages members."""

    __tablename__ = "workspace_members"
    __table_args__ = (CheckConstraint("role IN ('viewer', 'editor', 'admin')", name="role_valid"),)

    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))


class AuditEvent(Base):
    """Who did what, kept apart from the objects so deleting one keeps its history."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    username: Mapped[str] = mapped_column(String(128), default="", server_default="")
    credential: Mapped[str] = mapped_column(String(16), default="", server_default="")
    address: Mapped[str] = mapped_column(String(64), default="", server_default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32), default="", server_default="")
    target_id: Mapped[str] = mapped_column(String(128), default="", server_default="")
    outcome: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))


class Context(Base):
    """Model code as a tar.gz, addressed by the SHA-256 of its bytes so the same code is stored once."""

    __tablename__ = "contexts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    files: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class Experiment(Base):
    __tablename__ = "experiments"
    # Fetch server-set columns (updated_at) at flush, so a response never reloads a row that a
    # background job may already have deleted.
    __mapper_args__ = {"eager_defaults": True}
    __table_args__ = (
        CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in EXPERIMENT_STATES) + ")", name="state_valid"
        ),
        Index("ix_experiments_labels", "labels", postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    labels: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default="{}")
    state: Mapped[str] = mapped_column(String(32), index=True)
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    config: Mapped[dict[str, Any]]
    original_config: Mapped[str] = mapped_column(Text)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id"),
        index=True,
        default=DEFAULT_PROJECT_ID,
        server_default=str(DEFAULT_PROJECT_ID),
    )
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id", ondelete="SET NULL"))
    context_sha256: Mapped[str | None] = mapped_column(ForeignKey("contexts.sha256"), index=True)
    searcher_state: Mapped[dict[str, Any] | None]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    ended_at: Mapped[dt.datetime | None]

    owner: Mapped[User] = relationship(lazy="joined", innerjoin=True)


TRIAL_STATES = (
    "ACTIVE",
    "PAUSED",
    "STOPPING_CANCELED",
    "STOPPING_KILLED",
    "STOPPING_COMPLETED",
    "STOPPING_ERROR",
    "COMPLETED",
    "CANCELED",
    "ERROR",
)
ALLOCATION_STATES = ("PENDING", "ASSIGNED", "RUNNING", "TERMINATED")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class Agent(Base):
    """A machine's daemon; it polls for work, and each poll is its heartbeat."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    resource_pool: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64), default="", server_default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    draining: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    connected: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    registered_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class Slot(Base):
    __tablename__ = "slots"
    __table_args__ = (UniqueConstraint("agent_id", "index", name="uq_slots_agent_id_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    index: Mapped[int]
    type: Mapped[str] = mapped_column(String(16))
    uuid: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(256), default="", server_default="")
    memory_mb: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # False once the agent re-registers without this device: kept for history, never scheduled.
    present: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")


class Trial(Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("experiment_id", "request_id", name="uq_trials_experiment_id_request_id"),
        CheckConstraint(_in("state", TRIAL_STATES), name="state_valid"),
    )
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    hparams: Mapped[dict[str, Any]]
    seed: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(32), index=True)
    restarts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    run_id: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    steps_completed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    latest_checkpoint: Mapped[UUID | None] = mapped_column(Uuid)
    # The checkpoint the trial starts from until it has its own (searcher.source_*); never GC'd.
    warm_start_checkpoint: Mapped[UUID | None] = mapped_column(Uuid, index=True)
    best_validation: Mapped[float | None] = mapped_column(Float)
    searcher_metric: Mapped[float | None] = mapped_column(Float)
    # The searcher (adaptive_asha) has stopped it: its run is asked to checkpoint and exit, and
    # then the trial is COMPLETED instead of resumed.
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    end_reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    ended_at: Mapped[dt.datetime | None]


class Allocation(Base):
    """One run of one trial on some slots: PENDING -> ASSIGNED -> RUNNING -> TERMINATED."""

    __tablename__ = "allocations"
    __table_args__ = (CheckConstraint(_in("state", ALLOCATION_STATES), name="state_valid"),)
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[UUID] = mapped_column(Uuid, primary_key=True, default=uuid4)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int]
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"), index=True)
    resource_pool: Mapped[str] = mapped_column(String(128))
    slots_needed: Mapped[int]
    priority: Mapped[int]
    state: Mapped[str] = mapped_column(String(16), index=True)
    delivered: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    kill_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    kill_delivered: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    preempt_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    # When preemption was first asked for: the run is killed once its preemption_timeout has passed.
    preempt_requested_at: Mapped[dt.datetime | None]
    preempt_acked: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    exit_code: Mapped[int | None]
    exit_reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    assigned_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    # The checkpoint this run was told to start from (NULL: from scratch), set when the run starts.
    restored_checkpoint: Mapped[UUID | None] = mapped_column(Uuid)
    # What the trial's code reported before it ended (an EarlyExit value: INVALID_HP, ERRORED,
    # USER_REQUESTED_STOP); when the run ends its trial ends too, never retried.
    early_exit: Mapped[str | None] = mapped_column(String(32))


class AllocationSlot(Base):
    """A slot held by an allocation; the partial unique index makes double-booking impossible."""

    __tablename__ = "allocation_slots"
    __table_args__ = (
        Index(
            "uq_allocation_slots_held_slot_id",
            "slot_id",
            unique=True,
            postgresql_where=text("NOT released"),
        ),
    )

    allocation_id: Mapped[UUID] = mapped_column(
        ForeignKey("allocations.id", ondelete="CASCADE"), primary_key=True
    )
    slot_id: Mapped[int] = mapped_column(ForeignKey("slots.id", ondelete="CASCADE"), primary_key=True)
    released: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")


class Metric(Base):
    """One report. Rows of an earlier run past the step a later run restored are ``archived``
    (kept, never shown as live): exactly one live row per (trial, group, step)."""

    __tablename__ = "metrics"
    __table_args__ = (
        UniqueConstraint(
            "trial_id", "group", "steps_completed", "run_id", name="uq_metrics_trial_group_steps_run"
        ),
        Index(
            "uq_metrics_live_trial_group_steps",
            "trial_id",
            "group",
            "steps_completed",
            unique=True,
            postgresql_where=text("NOT archived"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    run_id: Mapped[int]
    group: Mapped[str] = mapped_column(String(64))
    steps_completed: Mapped[int] = mapped_column(BigInteger)
    values: Mapped[dict[str, Any]]
    reported_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")


class MetricBatch(Base):
    """Batch ids already stored, so a retried POST changes nothing."""

    __tablename__ = "metric_batches"

    batch_id: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), index=True)
    received_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class MetricRollup(Base):
    """Per fixed step bucket of a group and metric name, the least and greatest value with their
    steps: charts of a long series read these instead of every row (services/metric_rollups.py)."""

    __tablename__ = "metric_rollups"

    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True)
    group: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    min_value: Mapped[float] = mapped_column(Float)
    min_step: Mapped[int] = mapped_column(BigInteger)
    max_value: Mapped[float] = mapped_column(Float)
    max_step: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(Integer)


class MetricRollupMark(Base):
    """How far a group's rollups reach: buckets below ``upto_bucket`` are rolled up, and ``rows``
    counts the live rows in them. Its row lock orders everyone who changes the rollups."""

    __tablename__ = "metric_rollup_marks"

    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True)
    group: Mapped[str] = mapped_column(String(64), primary_key=True)
    upto_bucket: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(BigInteger)


CHECKPOINT_STATES = ("COMPLETED", "DELETED", "CORRUPTED")


class Checkpoint(Base):
    """A committed checkpoint; DELETED once GC removed its manifest, CORRUPTED when a restore failed."""

    __tablename__ = "checkpoints"
    __table_args__ = (
        CheckConstraint(_in("state", CHECKPOINT_STATES), name="state_valid"),
        Index("ix_checkpoints_trial_id_steps_completed", "trial_id", "steps_completed"),
    )

    uuid: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    allocation_id: Mapped[UUID | None] = mapped_column(ForeignKey("allocations.id", ondelete="SET NULL"))
    steps_completed: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(32))
    storage: Mapped[dict[str, Any]]
    manifest: Mapped[dict[str, Any]]
    # "metadata" is reserved on declarative classes; the column keeps the user's word.
    user_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB)
    size: Mapped[int] = mapped_column(BigInteger)
    parent_uuid: Mapped[UUID | None] = mapped_column(Uuid)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    deleted_at: Mapped[dt.datetime | None]
    corrupt_reason: Mapped[str | None] = mapped_column(Text)


class GCRequest(Base):
    """Outbox of checkpoint GC: written in the caller's transaction, published to Celery after commit.

    ``published_at`` stays NULL while the broker could not be reached; the scheduler thread publishes
    such rows again. ``checkpoint_uuids`` set means an explicit delete of exactly those checkpoints.
    """

    __tablename__ = "gc_requests"
    __table_args__ = (Index("ix_gc_requests_pending", "id", postgresql_where=text("done_at IS NULL")),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    checkpoint_uuids: Mapped[list[UUID] | None] = mapped_column(ARRAY(Uuid))
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    published_at: Mapped[dt.datetime | None]
    done_at: Mapped[dt.datetime | None]


class LogBatch(Base):
    """Log batch ids already stored, so an agent's retried POST adds no line twice."""

    __tablename__ = "log_batches"

    batch_id: Mapped[UUID] = mapped_column(Uuid, primary_key=True)
    allocation_id: Mapped[UUID] = mapped_column(ForeignKey("allocations.id", ondelete="CASCADE"), index=True)
    received_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class TrialLog(Base):
    __tablename__ = "trial_logs"
    __table_args__ = (Index("ix_trial_logs_trial_id_id", "trial_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    allocation_id: Mapped[UUID | None] = mapped_column(Uuid)
    rank: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    stream: Mapped[str] = mapped_column(String(16))
    ts: Mapped[dt.datetime]
    message: Mapped[str] = mapped_column(Text)


class Model(Base):
    """A named entry of the model registry; its versions point at checkpoints."""

    __tablename__ = "models"
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    labels: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default="{}")
    # "metadata" is reserved on declarative classes; the column keeps the user's word.
    model_metadata: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id"),
        index=True,
        default=DEFAULT_PROJECT_ID,
        server_default=str(DEFAULT_PROJECT_ID),
    )
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class ModelVersion(Base):
    """A checkpoint registered under a model; the restricting foreign key keeps it from deletion."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),)
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int]
    checkpoint_uuid: Mapped[UUID] = mapped_column(ForeignKey("checkpoints.uuid"), index=True)
    comment: Mapped[str] = mapped_column(Text, default="", server_default="")
    labels: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default="{}")
    version_metadata: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())

    model: Mapped[Model] = relationship(lazy="joined", innerjoin=True)
    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)
