from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict


class ContextOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sha256: str
    size: int
    files: int
    created_at: dt.datetime
