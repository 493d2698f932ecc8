"""Routes for a running trial (allocation token) and for the agent that runs it (agent token)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from stalwart_master.api.deps import AgentToken, AllocationDep, SessionDep, require_token, wake_scheduler
from stalwart_master.db.orm import Allocation
from stalwart_master.errors import Forbidden, NotFound
from stalwart_master.schemas.common import Text, problem_responses
from stalwart_master.services import allocations as allocations_service
from stalwart_master.services import trials as trials_service

router = APIRouter(
    prefix="/api/v1",
    tags=["allocations"],
    dependencies=[require_token],
    responses=problem_responses(401, 403, 404),
)
AllocationId = Annotated[UUID, Path()]


class StateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["RUNNING", "TERMINATED"]
    exit_code: int | None = None
    reason: Text = Field(default="", max_length=1000)


class LogLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ts: dt.datetime
    rank: int = Field(default=0, ge=0)
    stream: Literal["stdout", "stderr"] = "stdout"
    message: str = Field(max_length=65536)


class LogsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: UUID | None = None
    lines: list[LogLineIn] = Field(max_length=5000)


def _agents_allocation(session: Any, allocation_id: UUID) -> Allocation:
    allocation = session.get(Allocation, allocation_id, with_for_update=True)
    if allocation is None:
        raise NotFound(f"allocation {allocation_id} not found")
    return allocation  # type: ignore[no-any-return]


@router.post("/allocations/{allocation_id}/state", status_code=204)
def report_state(
    allocation_id: AllocationId, body: StateIn, _: AgentToken, session: SessionDep, request: Request
) -> Response:
    allocation = _agents_allocation(session, allocation_id)
    if body.state == "RUNNING":
        allocations_service.mark_running(session, allocation)
    else:
        allocations_service.finish_allocation(session, allocation, body.exit_code, body.reason or "exited")
        wake_scheduler(request)
    session.commit()
    return Response(status_code=204)


@router.post("/allocations/{allocation_id}/logs", status_code=204)
def ship_logs(allocation_id: AllocationId, body: LogsIn, _: AgentToken, session: SessionDep) -> Response:
    allocation = session.get(Allocation, allocation_id)
    if allocation is None:
        raise NotFound(f"allocation {allocation_id} not found")
    lines = [trials_service.LogLine(line.ts, line.rank, line.stream, line.message) for line in body.lines]
    trials_service.append_logs(session, allocation.trial_id, allocation.id, lines, body.batch_id)
    session.commit()
    return Response(status_code=204)


def _own(allocation: Allocation, allocation_id: UUID) -> None:
    if allocation.id != allocation_id:
        raise Forbidden("this token belongs to another allocation")


@router.get("/allocations/{allocation_id}/info")
def allocation_info(
    allocation_id: AllocationId, allocation: AllocationDep, session: SessionDep
) -> dict[str, Any]:
    _own(allocation, allocation_id)
    return allocations_service.trial_info(session, allocation)


@router.get("/allocations/{allocation_id}/signals/preemption")
async def preemption_signal(
    allocation_id: AllocationId,
    allocation: AllocationDep,
    session: SessionDep,
    timeout_seconds: Annotated[float, Query(ge=0, le=120)] = 60,
) -> dict[str, bool]:
    """Long-poll: true as soon as the master wants this run to checkpoint and exit."""
    _own(allocation, allocation_id)
    deadline = time.monotonic() + timeout_seconds

    def check() -> bool:
        session.expire_all()
        current = session.get(Allocation, allocation_id)
        return bool(current and (current.preempt_requested or current.state == "TERMINATED"))

    while True:
        if await run_in_threadpool(check):
            return {"preempt": True}
        if time.monotonic() >= deadline:
            return {"preempt": False}
        await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


@router.post("/allocations/{allocation_id}/signals/ack_preemption", status_code=204)
def ack_preemption(allocation_id: AllocationId, allocation: AllocationDep, session: SessionDep) -> Response:
    _own(allocation, allocation_id)
    allocation.preempt_acked = True
    session.commit()
    return Response(status_code=204)


class MetricIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: str = Field(min_length=1, max_length=64)
    steps_completed: int = Field(ge=0)
    values: dict[str, Any]


class MetricsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: int = Field(ge=1)
    batch_id: UUID
    metrics: list[MetricIn] = Field(max_length=10_000)


class ProgressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: int = Field(ge=1)
    progress: float = Field(ge=0, le=1)


class SearcherCompletedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: int = Field(ge=1)
    metric: float


def _trial_of(allocation: Allocation, trial_id: int) -> None:
    if allocation.trial_id != trial_id:
        raise Forbidden("this token belongs to another trial")


@router.post("/trials/{trial_id}/metrics", status_code=204, responses=problem_responses(422))
def report_metrics(
    trial_id: int, body: MetricsIn, allocation: AllocationDep, session: SessionDep
) -> Response:
    """JSON's NaN and Infinity tokens are accepted: a diverging loss is worth recording as such."""
    _trial_of(allocation, trial_id)
    trial = trials_service.get_trial(session, trial_id, for_update=True)
    reports = [trials_service.MetricReport(m.group, m.steps_completed, m.values) for m in body.metrics]
    trials_service.ingest_metrics(session, trial, body.run_id, body.batch_id, reports)
    session.commit()
    return Response(status_code=204)


@router.post("/trials/{trial_id}/progress", status_code=204)
def report_progress(
    trial_id: int, body: ProgressIn, allocation: AllocationDep, session: SessionDep
) -> Response:
    _trial_of(allocation, trial_id)
    trial = trials_service.get_trial(session, trial_id, for_update=True)
    trial.progress = body.progress
    session.commit()
    return Response(status_code=204)


@router.post("/trials/{trial_id}/searcher/completed", status_code=204)
def searcher_completed(
    trial_id: int, body: SearcherCompletedIn, allocation: AllocationDep, session: SessionDep
) -> Response:
    _trial_of(allocation, trial_id)
    trial = trials_service.get_trial(session, trial_id, for_update=True)
    trial.searcher_metric = body.metric
    session.commit()
    return Response(status_code=204)


class ManifestFile(BaseModel):
    path: str = Field(min_length=1, max_length=4096)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    files: list[ManifestFile] = Field(min_length=1, max_length=1_000_000)


class CheckpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uuid: UUID
    trial_id: int = Field(ge=1)
    allocation_id: UUID | None = None
    steps_completed: int = Field(ge=0)
    storage: dict[str, Any]
    manifest: Manifest
    metadata: dict[str, Any] = Field(default_factory=dict)
    parent_uuid: UUID | None = None


class CheckpointOut(BaseModel):
    uuid: UUID
    trial_id: int
    experiment_id: int | None = None
    allocation_id: UUID | None
    steps_completed: int
    state: str
    storage: dict[str, Any]
    manifest: dict[str, Any]
    metadata: dict[str, Any]
    size: int
    parent_uuid: UUID | None
    created_at: dt.datetime


def checkpoint_out(checkpoint: Any, experiment_id: int | None = None) -> CheckpointOut:
    return CheckpointOut(
        uuid=checkpoint.uuid,
        trial_id=checkpoint.trial_id,
        experiment_id=experiment_id,
        allocation_id=checkpoint.allocation_id,
        steps_completed=checkpoint.steps_completed,
        state=checkpoint.state,
        storage=checkpoint.storage,
        manifest=checkpoint.manifest,
        metadata=checkpoint.user_metadata,
        size=checkpoint.size,
        parent_uuid=checkpoint.parent_uuid,
        created_at=checkpoint.created_at,
    )


@router.post(
    "/checkpoints", status_code=201, response_model=CheckpointOut, responses=problem_responses(409, 422)
)
def register_checkpoint(body: CheckpointIn, allocation: AllocationDep, session: SessionDep) -> CheckpointOut:
    _trial_of(allocation, body.trial_id)
    trial = trials_service.get_trial(session, body.trial_id, for_update=True)
    checkpoint = trials_service.register_checkpoint(
        session,
        trial,
        checkpoint_uuid=body.uuid,
        allocation_id=allocation.id,
        steps_completed=body.steps_completed,
        storage=body.storage,
        manifest=body.manifest.model_dump(),
        metadata=body.metadata,
        parent_uuid=body.parent_uuid,
    )
    session.commit()
    return checkpoint_out(checkpoint)
