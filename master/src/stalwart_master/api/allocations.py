"""Routes for a running trial (allocation token) and for the agent that runs it (agent token)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from stalwart_master.api.deps import (
    AgentCaller,
    AllocationDep,
    Caller,
    SessionDep,
    require_agent,
    wake_scheduler,
)
from stalwart_master.db.orm import Allocation
from stalwart_master.errors import Forbidden, NotFound
from stalwart_master.schemas.allocations import (
    CheckpointIn,
    CheckpointOut,
    CorruptIn,
    CorruptOut,
    LogsIn,
    MetricsIn,
    ProgressIn,
    SearcherCompletedIn,
    StateIn,
    checkpoint_out,
)
from stalwart_master.schemas.common import problem_responses
from stalwart_master.services import allocations as allocations_service
from stalwart_master.services import checkpoints as checkpoints_service
from stalwart_master.services import trials as trials_service

router = APIRouter(
    prefix="/api/v1",
    tags=["allocations"],
    responses=problem_responses(401, 403, 404),
)
AllocationId = Annotated[UUID, Path()]


def _agents_own(
    session: SessionDep, caller: Caller, allocation_id: UUID, *, for_update: bool = False
) -> Allocation:
    """An agent reports only for allocations placed on it; any other is not found."""
    agent_id = require_agent(caller, None)
    allocation = allocations_service.get_allocation(session, allocation_id, for_update=for_update)
    if allocation.agent_id != agent_id:
        raise NotFound(f"allocation {allocation_id} not found")
    return allocation


@router.post("/allocations/{allocation_id}/state", status_code=204)
def report_state(
    allocation_id: AllocationId, body: StateIn, caller: AgentCaller, session: SessionDep, request: Request
) -> Response:
    allocation = _agents_own(session, caller, allocation_id, for_update=True)
    if body.state == "RUNNING":
        allocations_service.mark_running(session, allocation)
    else:
        allocations_service.finish_allocation(session, allocation, body.exit_code, body.reason or "exited")
        wake_scheduler(request)
    session.commit()
    return Response(status_code=204)


@router.post("/allocations/{allocation_id}/logs", status_code=204)
def ship_logs(
    allocation_id: AllocationId, body: LogsIn, caller: AgentCaller, session: SessionDep
) -> Response:
    allocation = _agents_own(session, caller, allocation_id)
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
    info = allocations_service.trial_info(session, allocation)
    session.commit()  # the run's restored checkpoint and the metric rollback it implies
    return info


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
        session.expire_all()  # each poll must see what other transactions committed since
        return allocations_service.preemption_requested(session, allocation_id)

    while True:
        if await run_in_threadpool(check):
            return {"preempt": True}
        if time.monotonic() >= deadline:
            return {"preempt": False}
        await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


@router.post("/allocations/{allocation_id}/signals/ack_preemption", status_code=204)
def ack_preemption(allocation_id: AllocationId, allocation: AllocationDep, session: SessionDep) -> Response:
    _own(allocation, allocation_id)
    allocations_service.acknowledge_preemption(allocation)
    session.commit()
    return Response(status_code=204)


def _trial_of(allocation: Allocation, trial_id: int) -> None:
    if allocation.trial_id != trial_id:
        raise Forbidden("this token belongs to another trial")


@router.post("/trials/{trial_id}/metrics", status_code=204, responses=problem_responses(422))
def report_metrics(
    trial_id: int, body: MetricsIn, allocation: AllocationDep, session: SessionDep, request: Request
) -> Response:
    """JSON's NaN and Infinity tokens are accepted: a diverging loss is worth recording as such."""
    _trial_of(allocation, trial_id)
    trial = trials_service.get_trial(session, trial_id, for_update=True)
    reports = [trials_service.MetricReport(m.group, m.steps_completed, m.values) for m in body.metrics]
    trials_service.ingest_metrics(session, trial, body.run_id, body.batch_id, reports)
    validations = [(r.steps_completed, r.values) for r in reports if r.group == "validation"]
    stopped = validations and allocations_service.on_validations(session, trial, validations)
    session.commit()
    if stopped:
        wake_scheduler(request)
    return Response(status_code=204)


@router.post("/trials/{trial_id}/progress", status_code=204)
def report_progress(
    trial_id: int, body: ProgressIn, allocation: AllocationDep, session: SessionDep
) -> Response:
    _trial_of(allocation, trial_id)
    trials_service.set_progress(session, trial_id, body.progress)
    session.commit()
    return Response(status_code=204)


@router.post("/trials/{trial_id}/searcher/completed", status_code=204)
def searcher_completed(
    trial_id: int, body: SearcherCompletedIn, allocation: AllocationDep, session: SessionDep
) -> Response:
    _trial_of(allocation, trial_id)
    trials_service.set_searcher_metric(session, trial_id, body.metric)
    session.commit()
    return Response(status_code=204)


@router.post(
    "/checkpoints", status_code=201, response_model=CheckpointOut, responses=problem_responses(409, 422)
)
def register_checkpoint(body: CheckpointIn, allocation: AllocationDep, session: SessionDep) -> CheckpointOut:
    """409 means already registered: a retried registration treats it as success."""
    _trial_of(allocation, body.trial_id)
    trial = trials_service.get_trial(session, body.trial_id, for_update=True)
    checkpoint = trials_service.register_checkpoint(
        session,
        trial,
        checkpoint_uuid=body.uuid,
        allocation_id=allocation.id,
        steps_completed=body.steps_completed,
        storage=body.storage,
        manifest=body.manifest.model_dump(exclude_unset=True),  # stored as the harness wrote it
        metadata=body.metadata,
        parent_uuid=body.parent_uuid,
    )
    session.commit()
    return checkpoint_out(checkpoint)


@router.post(
    "/allocations/{allocation_id}/checkpoints",
    status_code=201,
    response_model=CheckpointOut,
    responses=problem_responses(409, 422),
)
def register_allocation_checkpoint(
    allocation_id: AllocationId, body: CheckpointIn, allocation: AllocationDep, session: SessionDep
) -> CheckpointOut:
    """The same as ``POST /checkpoints``, addressed by the allocation that wrote it."""
    _own(allocation, allocation_id)
    return register_checkpoint(body, allocation, session)


@router.post("/allocations/{allocation_id}/checkpoints/{checkpoint_uuid}/corrupt", response_model=CorruptOut)
def report_corrupt_checkpoint(
    allocation_id: AllocationId,
    checkpoint_uuid: UUID,
    body: CorruptIn,
    allocation: AllocationDep,
    session: SessionDep,
) -> CorruptOut:
    """A restore found the checkpoint unreadable: it becomes CORRUPTED and the trial's latest
    checkpoint moves to the newest COMPLETED one left, which is returned for the next try."""
    _own(allocation, allocation_id)
    fallback = checkpoints_service.report_corrupt(session, allocation, checkpoint_uuid, body.reason)
    session.commit()
    return CorruptOut(latest_checkpoint=fallback)
