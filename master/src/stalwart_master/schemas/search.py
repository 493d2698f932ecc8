"""Request bodies of the search routes (Determined's ``preview-search``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from stalwart_master.schemas.common import Text


class SearchPreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: Text = Field(min_length=1, description="The experiment config as YAML text")
    limit: int = Field(default=100, ge=0, le=10_000, description="List at most this many trials.")
