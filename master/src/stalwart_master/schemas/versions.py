"""Bodies and answers of fork, continue and the fork tree (``services/versions.py``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stalwart_master.schemas.experiments import ExperimentDetail
from stalwart_master.services.states import ExperimentState

OVERRIDES_DESCRIPTION = (
    "Config fields to change, as a nested mapping deep-merged over the config "
    '(mappings merge key by key, any other value replaces), e.g. {"max_restarts": 5}.'
)


class ExperimentFork(BaseModel):
    """Fork: a new experiment from the parent's config as submitted, with these changes."""

    model_config = ConfigDict(extra="forbid")

    config_overrides: dict[str, Any] = Field(default_factory=dict, description=OVERRIDES_DESCRIPTION)
    paused: bool = False


class ExperimentContinue(BaseModel):
    """Continue: only fields about how trials run may change (``max_restarts``, ``resources``,
    checkpoint policy and GC, periods, ``environment``; ``searcher.max_length`` for a single trial)."""

    model_config = ConfigDict(extra="forbid")

    config_overrides: dict[str, Any] = Field(default_factory=dict, description=OVERRIDES_DESCRIPTION)


class ExperimentContinued(ExperimentDetail):
    resumed_trial_ids: list[int] = Field(description="The trials that resume, each as a new run.")


class ExperimentVersion(BaseModel):
    """One experiment of a fork tree."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    state: ExperimentState
    parent_id: int | None
    owner: str
    project_id: int
    created_at: dt.datetime

    @field_validator("owner", mode="before")
    @classmethod
    def _owner(cls, owner: Any) -> Any:
        return getattr(owner, "username", owner)
