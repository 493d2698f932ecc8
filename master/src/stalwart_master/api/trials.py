"""Trials, their metrics, logs and checkpoints, as users see them."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from stalwart_master.api import audit
from stalwart_master.api.deps import (
    AllocationDep,
    Credential,
    CurrentUser,
    SessionDep,
    UserCaller,
    UserOrAllocation,
    wake_scheduler,
)
from stalwart_master.db.orm import Checkpoint, Trial
from stalwart_master.errors import FieldError, Invalid
from stalwart_master.schemas.allocations import CheckpointOut, checkpoint_out
from stalwart_master.schemas.common import problem_responses
from stalwart_master.services import allocations as allocations_service
from stalwart_master.services import authz, metric_series
from stalwart_master.services import checkpoints as checkpoints_service
from stalwart_master.services import steering as steering_service
from stalwart_master.services import trials as trials_service

router = APIRouter(prefix="/api/v1", tags=["trials"], responses=problem_responses(401, 404))
TrialId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ExperimentId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class TrialOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    experiment_id: int
    request_id: str
    hparams: dict[str, Any]
    seed: int
    state: str
    restarts: int
    run_id: int
    steps_completed: int
    progress: float
    latest_checkpoint: uuid.UUID | None
    warm_start_checkpoint: uuid.UUID | None
    best_validation: float | None
    end_reason: str
    created_at: dt.datetime
    ended_at: dt.datetime | None
    latest_training: dict[str, float | None] | None = Field(
        default=None, description="Values of the latest live training row; NaN and infinities as null."
    )
    latest_validation: dict[str, float | None] | None = Field(
        default=None, description="Values of the latest live validation row; NaN and infinities as null."
    )
    searcher_metric_value: float | None = Field(
        default=None, description="The best value of the searcher metric validations reported so far."
    )


def _trials_out(session: Session, trials: list[Trial]) -> list[TrialOut]:
    """Latest metrics of every trial in one statement, whatever the number of trials."""
    latest = metric_series.latest_values(session, [t.id for t in trials])
    out = []
    for trial in trials:
        shaped = TrialOut.model_validate(trial)
        shaped.latest_training = latest.get((trial.id, "training"))
        shaped.latest_validation = latest.get((trial.id, "validation"))
        shaped.searcher_metric_value = trial.best_validation
        out.append(shaped)
    return out


@router.get("/experiments/{experiment_id}/trials", response_model=list[TrialOut])
def list_trials(experiment_id: ExperimentId, user: CurrentUser, session: SessionDep) -> list[TrialOut]:
    authz.experiment_for(session, user, experiment_id)
    return _trials_out(session, trials_service.list_trials(session, experiment_id))


@router.get("/trials/{trial_id}", response_model=TrialOut)
def get_trial(trial_id: TrialId, user: CurrentUser, session: SessionDep) -> TrialOut:
    return _trials_out(session, [authz.trial_for(session, user, trial_id)])[0]


@router.post("/trials/{trial_id}/kill", response_model=TrialOut, responses=problem_responses(403, 409))
def kill_trial(trial_id: TrialId, caller: UserCaller, session: SessionDep, request: Request) -> TrialOut:
    """Determined's ``det trial kill``: only this trial stops (CANCELED); its experiment goes on."""
    trial = steering_service.kill_trial(session, caller.user, trial_id)
    answer = _trials_out(session, [trial])[0]
    audit.record(session, caller, "trial.kill", "trial", trial_id)
    session.commit()
    wake_scheduler(request)
    return answer


MetricName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00]+$")]


class MetricRowOut(BaseModel):
    group: str
    steps_completed: int
    run_id: int
    values: dict[str, float] = Field(description="NaN and infinities as the JSON tokens NaN, Infinity.")
    reported_at: dt.datetime
    archived: bool


class MetricSeriesOut(BaseModel):
    """What ``GET /trials/{id}/metrics`` answers (written out by hand, to keep NaN tokens)."""

    items: list[MetricRowOut]
    downsampled: bool = Field(description="Whether rows were left out by max_points.")
    total: int = Field(description="Live rows of the group(s), drawn or not.")


@router.get(
    "/trials/{trial_id}/metrics",
    responses={200: {"model": MetricSeriesOut}, **problem_responses(422)},
)
def trial_metrics(
    trial_id: TrialId,
    user: CurrentUser,
    session: SessionDep,
    group: Annotated[str | None, Query(max_length=64, pattern=r"^[^.\x00]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    include_archived: bool = False,
    max_points: Annotated[
        int | None,
        Query(ge=10, le=10_000, description="Downsample each group to about this many points per metric."),
    ] = None,
    metric: Annotated[
        list[MetricName], Query(max_length=100, description="Only these metric names (repeatable).")
    ] = [],  # noqa: B006 (FastAPI copies defaults)
    start_batches: Annotated[
        int | None, Query(ge=0, le=2**62, description="Only steps from this one on (not with max_points).")
    ] = None,
    end_batches: Annotated[
        int | None, Query(ge=0, le=2**62, description="Only steps before this one (not with max_points).")
    ] = None,
) -> Response:
    """One live row per (group, step); ``include_archived`` adds the rows of earlier runs past the
    step a later run restored. Values keep NaN and Infinity as JSON tokens (Python reads them back).

    With ``max_points`` each group's live rows are cut into at most ``max_points / 2`` step ranges, and per
    range and metric the rows with the least and greatest value are kept (spikes survive), with the
    first and last rows; ``limit`` does not apply. ``total`` counts the live rows of the group(s).
    """
    if max_points is not None and include_archived:
        raise Invalid([FieldError("include_archived", "cannot be combined with max_points")])
    if max_points is not None and (start_batches is not None or end_batches is not None):
        raise Invalid([FieldError("start_batches", "a step range cannot be combined with max_points")])
    authz.trial_for(session, user, trial_id)
    if max_points is not None:
        series = metric_series.downsample(
            session, trial_id, max_points=max_points, group=group, metrics=metric
        )
        session.commit()  # keeps the rollups a long series was just caught up to
        found, total, downsampled = series.rows, series.total, series.downsampled
    else:
        found = trials_service.list_metrics(
            session,
            trial_id,
            group,
            limit,
            include_archived=include_archived,
            metrics=metric,
            start_batches=start_batches,
            end_batches=end_batches,
        )
        downsampled = False
        paged = start_batches is not None or end_batches is not None
        if len(found) < limit and not metric and not paged:  # every row is here: count them, not the table
            total = sum(not m.archived for m in found)
        else:
            total = trials_service.count_live_metrics(session, trial_id, group)
    rows = [
        {
            "group": m.group,
            "steps_completed": m.steps_completed,
            "run_id": m.run_id,
            "values": {
                k: trials_service.decode_value(v) for k, v in metric_series.restrict(m.values, metric).items()
            },
            "reported_at": m.reported_at.isoformat(),
            "archived": m.archived,
        }
        for m in found
    ]
    answer = {"items": rows, "downsampled": downsampled, "total": total}
    return Response(json.dumps(answer, allow_nan=True), media_type="application/json")


class RunOut(BaseModel):
    """One run (allocation) of a trial: where and when it ran, how it ended, what it restored."""

    model_config = ConfigDict(from_attributes=True)

    run_id: int
    allocation_id: uuid.UUID = Field(validation_alias="id")
    agent_id: str | None
    state: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    exit_code: int | None
    exit_reason: str
    restored_checkpoint: uuid.UUID | None
    last_step: int | None = Field(
        default=None,
        description="The furthest step this run reported a metric for (rows a later run rolled back "
        "included); with the next run's restored checkpoint it says how many steps were redone.",
    )


@router.get("/trials/{trial_id}/runs", response_model=list[RunOut])
def list_runs(trial_id: TrialId, user: CurrentUser, session: SessionDep) -> list[RunOut]:
    """First run first; ``exit_reason`` is ``exited``, ``launch failed``, ``agent lost``,
    ``preemption timeout``, ``killed``, ``drained``, ``preempted`` or ``not started``."""
    authz.trial_for(session, user, trial_id)
    last_steps = trials_service.last_step_by_run(session, trial_id)
    runs = [RunOut.model_validate(a) for a in trials_service.list_runs(session, trial_id)]
    return [run.model_copy(update={"last_step": last_steps.get(run.run_id)}) for run in runs]


def _described(session: Session, checkpoints: list[Checkpoint]) -> list[CheckpointOut]:
    found = checkpoints_service.details(session, checkpoints)
    return [
        checkpoint_out(
            c,
            found[c.uuid].experiment_id,
            model_versions=found[c.uuid].model_versions,
            searcher_metric=found[c.uuid].searcher_metric,
        )
        for c in checkpoints
    ]


@router.get("/experiments/{experiment_id}/checkpoints", response_model=list[CheckpointOut])
def list_checkpoints(
    experiment_id: ExperimentId, user: CurrentUser, session: SessionDep
) -> list[CheckpointOut]:
    """Every checkpoint, DELETED and CORRUPTED ones included (``state`` tells them apart)."""
    authz.experiment_for(session, user, experiment_id)
    return _described(session, trials_service.list_checkpoints(session, experiment_id))


@router.get("/checkpoints/{checkpoint_uuid}", response_model=CheckpointOut)
def get_checkpoint(
    checkpoint_uuid: uuid.UUID, caller: UserOrAllocation, session: SessionDep
) -> CheckpointOut:
    """A trial reads checkpoints of its own experiment and the one it warm-starts from."""
    checkpoint = trials_service.get_checkpoint(session, checkpoint_uuid)
    if caller.kind == Credential.ALLOCATION:
        checkpoints_service.require_allocation_may_read(session, caller.token, checkpoint)
    else:
        authz.checkpoint_for(session, caller.user, checkpoint)
    return _described(session, [checkpoint])[0]


@router.delete(
    "/checkpoints/{checkpoint_uuid}",
    response_model=CheckpointOut,
    status_code=202,
    responses=problem_responses(403, 409),
)
def delete_checkpoint(checkpoint_uuid: uuid.UUID, caller: UserCaller, session: SessionDep) -> CheckpointOut:
    """Accepted: GC deletes the storage in the background, then the checkpoint turns DELETED.

    409 when a model version registers it or a trial that has not ended warm-starts from it.
    """
    checkpoint = checkpoints_service.delete_checkpoint(session, caller.user, checkpoint_uuid)
    answer = _described(session, [checkpoint])[0]
    audit.record(session, caller, "checkpoint.delete", "checkpoint", checkpoint_uuid)
    session.commit()
    return answer


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    # A time without a zone is read as UTC, the zone the master stores and shows.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)


@router.get("/trials/{trial_id}/logs", responses={200: {"content": {"application/x-ndjson": {}}}})
async def trial_logs(
    trial_id: TrialId,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    follow: bool = False,
    tail: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    head: Annotated[int | None, Query(ge=1, le=100_000, description="Only the first N lines.")] = None,
    rank_id: Annotated[list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Query(max_length=64)] = [],  # noqa: B006
    stdtype: Annotated[list[Literal["stdout", "stderr"]], Query(max_length=2)] = [],  # noqa: B006
    level: Annotated[
        Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None,
        Query(description="Only lines of this level or above; a line without `LEVEL:` counts as INFO."),
    ] = None,
    timestamp_before: Annotated[
        dt.datetime | None, Query(description="Only lines written before this time (UTC unless given).")
    ] = None,
    timestamp_after: Annotated[
        dt.datetime | None, Query(description="Only lines written after this time.")
    ] = None,
) -> StreamingResponse:
    """Newline-delimited JSON, in order; with follow the stream ends when no run is going or coming.

    ``head`` and ``tail`` count lines that pass the filters; ``head`` ends the stream (no follow).
    """
    if head is not None and tail is not None:
        raise Invalid([FieldError("head", "give head or tail, not both")])
    await run_in_threadpool(authz.trial_for, session, user, trial_id)
    flt = trials_service.LogFilter(
        ranks=tuple(rank_id),
        streams=tuple(stdtype),
        min_level=level,
        before=_utc(timestamp_before),
        after=_utc(timestamp_after),
    )
    start = await run_in_threadpool(trials_service.tail_start, session, trial_id, tail, flt) if tail else 0
    sessions: sessionmaker[Session] = request.app.state.sessions
    left = head

    def batch(after: int) -> tuple[list[dict[str, Any]], bool]:
        with sessions() as s:
            # State before lines: a run that ended shipped its lines first, so none are missed.
            running = trials_service.has_run_ahead(s, trial_id)
            lines = trials_service.read_logs(
                s, trial_id, after_id=after, limit=min(left or 1000, 1000), flt=flt
            )
            return [
                {
                    "id": line.id,
                    "ts": line.ts.isoformat(),
                    "rank": line.rank,
                    "stream": line.stream,
                    "message": line.message,
                }
                for line in lines
            ], running

    async def lines() -> AsyncIterator[bytes]:
        nonlocal left
        after = start
        while True:
            rows, running = await run_in_threadpool(batch, after)
            for row in rows:
                after = row["id"]
                yield (json.dumps(row) + "\n").encode()
            if left is not None:
                left -= len(rows)
                if left <= 0:
                    return
            if rows:
                continue
            if not follow or not running or await request.is_disconnected():
                return
            await asyncio.sleep(0.25)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


class EarlyExitIn(BaseModel):
    """Determined's ``ReportTrialSearcherEarlyExit``: why the trial's code ends it early."""

    model_config = ConfigDict(extra="forbid")

    reason: Literal["INVALID_HP", "ERRORED", "USER_REQUESTED_STOP"]
    run_id: int = Field(ge=1, le=2**31 - 1)


@router.post("/trials/{trial_id}/early_exit", status_code=204, responses=problem_responses(403, 422))
def report_early_exit(
    trial_id: TrialId, body: EarlyExitIn, allocation: AllocationDep, session: SessionDep
) -> Response:
    """The run's trial ends when the run does: INVALID_HP and USER_REQUESTED_STOP as COMPLETED (an
    invalid trial is replaced by the searcher), ERRORED as ERROR; none of them is retried."""
    allocations_service.record_early_exit(session, allocation, trial_id, body.run_id, body.reason)
    session.commit()
    return Response(status_code=204)


class BestValidationOut(BaseModel):
    metric: float | None = Field(description="Best searcher metric so far; null before any validation.")


@router.get(
    "/experiments/{experiment_id}/searcher/best_searcher_validation_metric",
    response_model=BestValidationOut,
    responses=problem_responses(403),
)
def best_searcher_validation_metric(
    experiment_id: ExperimentId, allocation: AllocationDep, session: SessionDep
) -> BestValidationOut:
    """Determined's route, for ``core_context.train.get_experiment_best_validation()``: a run may
    read its own experiment's best searcher metric (a ``best`` checkpoint policy needs it)."""
    metric = trials_service.experiment_best_validation(session, allocation, experiment_id)
    session.rollback()
    return BestValidationOut(metric=metric)
