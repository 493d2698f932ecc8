"""The job queue and resource pools, as the dashboard's Cluster page reads them."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, ConfigDict, Field


class QueueEntryOut(BaseModel):
    """A run queued or going; trial, experiment and owner are null for an experiment the caller
    cannot see."""

    model_config = ConfigDict(from_attributes=True)

    position: int = Field(description="1-based place in its resource pool's queue.")
    allocation_id: uuid.UUID
    trial_id: int | None
    experiment_id: int | None
    experiment_name: str | None
    owner: str | None
    state: str = Field(description="PENDING (waiting), ASSIGNED or RUNNING.")
    priority: int = Field(description="1 is the most urgent, 99 the least.")
    resource_pool: str
    slots: int
    queued_at: dt.datetime
    started_at: dt.datetime | None


class ResourcePoolOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    agents: int = Field(description="Connected agents serving the pool.")
    slots_total: int = Field(description="Slots present on those agents.")
    slots_used: int = Field(description="Slots held by runs.")
    slots_free: int = Field(description="Slots the scheduler could give now (enabled, not draining).")
    preemption: bool = Field(description="Whether priority preemption is on in this pool.")
