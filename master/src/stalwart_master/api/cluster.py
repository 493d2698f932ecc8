"""The job queue and resource pools (Determined's names): what runs, what waits, where."""

from __future__ import annotations

from fastapi import APIRouter

from stalwart_master.api.deps import CurrentUser, SessionDep, SettingsDep
from stalwart_master.schemas.cluster import QueueEntryOut, ResourcePoolOut
from stalwart_master.schemas.common import problem_responses
from stalwart_master.services import authz
from stalwart_master.services import cluster as cluster_service

router = APIRouter(prefix="/api/v1", tags=["cluster"], responses=problem_responses(401))


@router.get("/job-queues", response_model=list[QueueEntryOut])
def job_queue(user: CurrentUser, session: SessionDep) -> list[QueueEntryOut]:
    """Runs waiting (PENDING) or going (ASSIGNED, RUNNING) in the order the scheduler serves them:
    per resource pool by priority, then by when they were queued. Every user sees every entry;
    those of experiments they cannot see come without trial, experiment and owner."""
    visible = authz.readable_workspace_ids(session, user)
    return [QueueEntryOut.model_validate(e) for e in cluster_service.job_queue(session, visible)]


@router.get("/resource-pools", response_model=list[ResourcePoolOut])
def resource_pools(_: CurrentUser, session: SessionDep, settings: SettingsDep) -> list[ResourcePoolOut]:
    """Pools named by registered agents or by queued runs, with their slot counts."""
    pools = cluster_service.resource_pools(session, settings.preemption_policy())
    return [ResourcePoolOut.model_validate(p) for p in pools]
