"""What agents and trials send the master, and checkpoints as the API shows them."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from stalwart_master.schemas.common import Text


class StateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["RUNNING", "TERMINATED"]
    exit_code: int | None = None
    reason: Text = Field(default="", max_length=1000)


class LogLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ts: dt.datetime
    rank: int = Field(default=0, ge=0)
    stream: Literal["stdout", "stderr"] = "stdout"
    message: str = Field(max_length=65536)


class LogsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: UUID | None = None
    lines: list[LogLineIn] = Field(max_length=5000)


class MetricIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: str = Field(min_length=1, max_length=64)
    steps_completed: int = Field(ge=0)
    values: dict[str, Any]


class MetricsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: int = Field(ge=1)
    batch_id: UUID
    metrics: list[MetricIn] = Field(max_length=10_000)


class ProgressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: int = Field(ge=1)
    progress: float = Field(ge=0, le=1)


class SearcherCompletedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: int = Field(ge=1)
    metric: float


class ManifestFile(BaseModel):
    path: str = Field(min_length=1, max_length=4096)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    files: list[ManifestFile] = Field(min_length=1, max_length=1_000_000)


class CheckpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uuid: UUID
    trial_id: int = Field(ge=1)
    allocation_id: UUID | None = None
    steps_completed: int = Field(ge=0)
    storage: dict[str, Any]
    manifest: Manifest
    metadata: dict[str, Any] = Field(default_factory=dict)
    parent_uuid: UUID | None = None


class CheckpointOut(BaseModel):
    uuid: UUID
    trial_id: int
    experiment_id: int | None = None
    allocation_id: UUID | None
    steps_completed: int
    state: str
    storage: dict[str, Any]
    manifest: dict[str, Any]
    metadata: dict[str, Any]
    size: int
    parent_uuid: UUID | None
    created_at: dt.datetime


def checkpoint_out(checkpoint: Any, experiment_id: int | None = None) -> CheckpointOut:
    return CheckpointOut(
        uuid=checkpoint.uuid,
        trial_id=checkpoint.trial_id,
        experiment_id=experiment_id,
        allocation_id=checkpoint.allocation_id,
        steps_completed=checkpoint.steps_completed,
        state=checkpoint.state,
        storage=checkpoint.storage,
        manifest=checkpoint.manifest,
        metadata=checkpoint.user_metadata,
        size=checkpoint.size,
        parent_uuid=checkpoint.parent_uuid,
        created_at=checkpoint.created_at,
    )
