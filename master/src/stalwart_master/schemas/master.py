from __future__ import annotations

from pydantic import BaseModel


class MasterInfo(BaseModel):
    version: str
    cluster_id: str
    cluster_name: str


class Health(BaseModel):
    status: str
    database: str
