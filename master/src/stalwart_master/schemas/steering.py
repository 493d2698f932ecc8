"""Request bodies for steering a running experiment from the CLI (``experiment set``, ``trial kill``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stalwart_master.expconf.common import INT32_MAX


class ResourcesPatch(BaseModel):
    """New ``resources`` values; an unset field keeps its current value. The ranges are the config's."""

    model_config = ConfigDict(extra="forbid")

    priority: int | None = Field(default=None, ge=1, le=99, description="Lower runs first.")
    weight: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="Fair-share weight.")
    max_slots: int | None = Field(
        default=None, ge=1, le=INT32_MAX, description="Cap on slots used by the whole experiment."
    )

    @model_validator(mode="after")
    def _something(self) -> ResourcesPatch:
        if self.priority is None and self.weight is None and self.max_slots is None:
            raise ValueError("give at least one of priority, weight, max_slots")
        return self
