"""The model registry as the API shows it: models, their versions, and pages of each."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stalwart_master.schemas.common import Text
from stalwart_master.schemas.experiments import Label
from stalwart_master.services.models import MAX_NAME, name_problem

MAX_LABELS = 100
# What name_problem accepts, for API clients: no '/', no control characters, not blank.
_NAME_PATTERN = "^[^/\\u0000-\\u001f\\u007f]*[^/\\s\\u0000-\\u001f\\u007f][^/\\u0000-\\u001f\\u007f]*$"


def _labels_ok(labels: list[str] | None) -> list[str] | None:
    for label in labels or []:
        if not label.strip():
            raise ValueError("each label must be 1-255 characters and not blank")
    return labels


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(
        min_length=1,
        max_length=MAX_NAME,
        description="Unique; no '/' and not blank",
        json_schema_extra={"pattern": _NAME_PATTERN},
    )
    description: Text = Field(default="", max_length=10_000)
    labels: list[Label] = Field(default_factory=list, max_length=MAX_LABELS)
    metadata: dict[str, Any] = Field(default_factory=dict)
    project_id: int = Field(default=1, ge=1, le=2**31 - 1, description="Default: Uncategorized")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        problem = name_problem(name)
        if problem:
            raise ValueError(problem)
        return name

    _check_labels = field_validator("labels")(_labels_ok)


class ModelPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: Text | None = Field(default=None, max_length=10_000)
    labels: list[Label] | None = Field(default=None, max_length=MAX_LABELS, description="Replaces the list")
    metadata: dict[str, Any] | None = Field(
        default=None, description="Merged into the stored metadata at the top level; null removes a key"
    )

    _check_labels = field_validator("labels")(_labels_ok)


class ModelOut(BaseModel):
    id: int
    name: str
    description: str
    labels: list[str]
    metadata: dict[str, Any]
    owner: str
    project_id: int
    num_versions: int
    latest_version: int | None
    created_at: dt.datetime
    updated_at: dt.datetime


def model_out(model: Any, counts: tuple[int, int | None] = (0, None)) -> ModelOut:
    return ModelOut(
        id=model.id,
        name=model.name,
        description=model.description,
        labels=list(model.labels),
        metadata=model.model_metadata,
        owner=model.user.username,
        project_id=model.project_id,
        num_versions=counts[0],
        latest_version=counts[1],
        created_at=model.created_at,
        updated_at=model.updated_at,
    )


class ModelVersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint_uuid: UUID
    comment: Text = Field(default="", max_length=10_000)
    labels: list[Label] = Field(default_factory=list, max_length=MAX_LABELS)
    metadata: dict[str, Any] = Field(default_factory=dict)

    _check_labels = field_validator("labels")(_labels_ok)


class ModelVersionOut(BaseModel):
    id: int
    model: str
    model_id: int
    version: int
    checkpoint_uuid: UUID
    experiment_id: int | None
    trial_id: int | None
    comment: str
    labels: list[str]
    metadata: dict[str, Any]
    owner: str
    created_at: dt.datetime


def version_out(version: Any, source: tuple[int, int] | None = None) -> ModelVersionOut:
    return ModelVersionOut(
        id=version.id,
        model=version.model.name,
        model_id=version.model_id,
        version=version.version,
        checkpoint_uuid=version.checkpoint_uuid,
        experiment_id=source[0] if source else None,
        trial_id=source[1] if source else None,
        comment=version.comment,
        labels=list(version.labels),
        metadata=version.version_metadata,
        owner=version.user.username,
        created_at=version.created_at,
    )
