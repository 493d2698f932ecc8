"""A checkpoint's lineage: its parent chain and the experiments and trials that produced it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field, field_validator

from stalwart._masking import mask_config
from stalwart_master.schemas.allocations import CheckpointOut


class LineageExperiment(BaseModel):
    id: int
    name: str
    config: dict[str, Any] = Field(description="The experiment's config, secrets masked.")
    context_sha256: str | None

    @field_validator("config")
    @classmethod
    def _mask_secrets(cls, config: dict[str, Any]) -> dict[str, Any]:
        masked: dict[str, Any] = mask_config(config)
        return masked


class LineageTrial(BaseModel):
    id: int
    experiment_id: int
    request_id: str
    hparams: dict[str, Any]
    warm_start_checkpoint: UUID | None


class LineageOut(BaseModel):
    checkpoint: CheckpointOut
    chain: list[CheckpointOut]
    missing_parent: UUID | None
    experiments: list[LineageExperiment]
    trials: list[LineageTrial]
