from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stalwart._masking import mask_config, mask_yaml_text
from stalwart_master.schemas.common import Text
from stalwart_master.services.states import ExperimentState

# Not blank, no NUL: the pattern documents what the validator below enforces.
Label = Annotated[
    Text,
    Field(
        min_length=1, max_length=255, json_schema_extra={"pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"}
    ),
]


class ExperimentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: Text = Field(min_length=1, description="The experiment config as YAML text")
    context: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="sha256 of an uploaded context"
    )
    paused: bool = False
    parent_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    project_id: int = Field(default=1, ge=1, le=2**31 - 1, description="Default: Uncategorized")


class ExperimentMove(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: int = Field(ge=1, le=2**31 - 1)


class ExperimentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(default=None, min_length=1, max_length=256)
    description: Text | None = Field(default=None, max_length=10_000)
    labels: list[Label] | None = Field(default=None, max_length=100)

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str] | None) -> list[str] | None:
        for label in labels or []:
            if not label.strip() or len(label) > 255:
                raise ValueError("each label must be 1-255 characters and not blank")
        return labels


class GCPolicyPatch(BaseModel):
    """New checkpoint GC values; an unset field keeps its current value."""

    model_config = ConfigDict(extra="forbid")

    save_experiment_best: int | None = Field(default=None, ge=0, le=2**31 - 1)
    save_trial_best: int | None = Field(default=None, ge=0, le=2**31 - 1)
    save_trial_latest: int | None = Field(default=None, ge=0, le=2**31 - 1)


class ExperimentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    labels: list[str]
    state: ExperimentState
    archived: bool
    owner: str
    project_id: int
    parent_id: int | None
    context_sha256: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    ended_at: dt.datetime | None
    config: dict[str, Any]

    @field_validator("config")
    @classmethod
    def _mask_secrets(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Storage credentials and other secrets are for trials, not for everyone who can list
        experiments (the one rule of ``stalwart._masking``)."""
        masked: dict[str, Any] = mask_config(config)
        return masked

    @field_validator("owner", mode="before")
    @classmethod
    def _owner(cls, owner: Any) -> Any:
        return getattr(owner, "username", owner)


class ExperimentListItem(ExperimentOut):
    """A row of the experiments table: the experiment and what its trials add up to."""

    progress: float | None = Field(description="Mean progress of its trials (0..1); null without trials.")
    trial_count: int
    best_metric: float | None = Field(
        description="Best searcher metric of its trials, honouring searcher.smaller_is_better."
    )
    searcher_metric: str | None = Field(description="The searcher metric's name from the config.")
    project_name: str
    workspace_id: int
    workspace_name: str
    started_at: dt.datetime = Field(description="When it was created (queued runs count as started).")
    duration_seconds: float = Field(description="From started_at to ended_at, or to now while it lasts.")


class ExperimentDetail(ExperimentOut):
    original_config: str = Field(description="The config as submitted, with secret values masked.")

    @field_validator("original_config")
    @classmethod
    def _mask_secrets_in_text(cls, text: str) -> str:
        return mask_yaml_text(text)


class ConfigWarningOut(BaseModel):
    """A config field that was accepted but is not acted on (a Determined field Stalwart ignores)."""

    field: str = Field(description="Dotted path into the config, e.g. environment.force_pull_image")
    message: str = Field(description="Why it is ignored")


class ExperimentCreated(ExperimentDetail):
    warnings: list[ConfigWarningOut] = Field(
        default_factory=list, description="One per config field that was accepted but is ignored."
    )
