"""What agents and trials send the master, and checkpoints as the API shows them."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stalwart._masking import mask_config
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


class ManifestChunk(BaseModel):
    model_config = ConfigDict(extra="allow")

    digest: str = Field(pattern=r"^[0-9a-f]{16,128}$")
    size: int = Field(ge=0)
    stored: int | None = Field(default=None, ge=0)


class ManifestFile(BaseModel):
    """A file of the chunk-store format (``chunks``) or of the older whole-file one (``sha256``)."""

    model_config = ConfigDict(extra="allow")

    path: str = Field(min_length=1, max_length=4096)
    size: int = Field(ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    chunks: list[ManifestChunk] | None = Field(default=None, max_length=10_000_000)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    files: list[ManifestFile] = Field(min_length=1, max_length=1_000_000)
    size: int | None = Field(default=None, ge=0)
    stored_size: int | None = Field(default=None, ge=0)


class CheckpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uuid: UUID
    trial_id: int = Field(ge=1)
    allocation_id: UUID | None = None
    steps_completed: int = Field(ge=0)
    storage: dict[str, Any] = Field(
        description="Where the checkpoint was written: must be the checkpoint_storage of the trial's "
        "info (422 otherwise); the master keeps its own copy of it, not this one."
    )
    manifest: Manifest
    metadata: dict[str, Any] = Field(default_factory=dict)
    parent_uuid: UUID | None = None


class CheckpointOut(BaseModel):
    uuid: UUID
    trial_id: int
    experiment_id: int | None = None
    allocation_id: UUID | None
    steps_completed: int
    state: str = Field(description="COMPLETED, DELETED (storage removed by GC) or CORRUPTED.")
    storage: dict[str, Any] = Field(
        description="Where it is kept, as the master resolved it; never credentials."
    )
    manifest: dict[str, Any]
    metadata: dict[str, Any]
    size: int = Field(description="Bytes the checkpoint holds (before compression and dedup).")
    stored_size: int | None = Field(description="Bytes of the distinct chunks it references, as stored.")
    parent_uuid: UUID | None
    created_at: dt.datetime
    deleted_at: dt.datetime | None = None
    corrupt_reason: str | None = None
    model_versions: list[str] = Field(
        default_factory=list, description='"name:version" of each model version protecting it from GC.'
    )
    searcher_metric: float | None = Field(
        default=None, description="The searcher metric validated at the same step, if any."
    )

    @field_validator("storage")
    @classmethod
    def _mask_secrets(cls, storage: dict[str, Any]) -> dict[str, Any]:
        """Rows keep no credentials; one written before that rule still shows none."""
        masked: dict[str, Any] = mask_config(storage)
        return masked


def checkpoint_out(
    checkpoint: Any,
    experiment_id: int | None = None,
    *,
    model_versions: list[str] | None = None,
    searcher_metric: float | None = None,
) -> CheckpointOut:
    stored = checkpoint.manifest.get("stored_size") if isinstance(checkpoint.manifest, dict) else None
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
        stored_size=int(stored) if isinstance(stored, int) else None,
        parent_uuid=checkpoint.parent_uuid,
        created_at=checkpoint.created_at,
        deleted_at=checkpoint.deleted_at,
        corrupt_reason=checkpoint.corrupt_reason,
        model_versions=model_versions or [],
        searcher_metric=searcher_metric,
    )


class CorruptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text = Field(min_length=1, max_length=4000)


class CorruptOut(BaseModel):
    latest_checkpoint: UUID | None = Field(
        description="The trial's newest COMPLETED checkpoint other than the reported one, or null."
    )
