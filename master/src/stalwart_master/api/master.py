from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import select, text

from stalwart_master import __version__
from stalwart_master.api.deps import CurrentUser, Public, SessionDep, SettingsDep
from stalwart_master.db.orm import Cluster
from stalwart_master.expconf import experiment_config_json_schema
from stalwart_master.schemas.master import Health, MasterInfo

public = APIRouter(tags=["master"])
router = APIRouter(prefix="/api/v1", tags=["master"])


@public.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(_: Public, session: SessionDep) -> Any:
    try:
        session.execute(text("SELECT 1"))
    except Exception:  # any failure to reach the database means not ready
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return Health(status="ok", database="ok")


@public.get("/api/v1/master", response_model=MasterInfo)
def master_info(_: Public, session: SessionDep, settings: SettingsDep) -> MasterInfo:
    cluster_id = session.scalar(select(Cluster.id))
    return MasterInfo(version=__version__, cluster_id=str(cluster_id), cluster_name=settings.cluster_name)


@router.get("/schemas/experiment")
def experiment_schema(_: CurrentUser) -> dict[str, Any]:
    return experiment_config_json_schema()
