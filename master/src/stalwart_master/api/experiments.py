from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, status

from stalwart_master.api import audit
from stalwart_master.api.deps import CurrentUser, SessionDep, SettingsDep, UserCaller, wake_scheduler
from stalwart_master.db.orm import utcnow
from stalwart_master.expconf.determined import ConfigWarning
from stalwart_master.jobs import enqueue_experiment_deletion
from stalwart_master.schemas.common import Page, Text, problem_responses
from stalwart_master.schemas.experiments import (
    ConfigWarningOut,
    ExperimentCreate,
    ExperimentCreated,
    ExperimentDetail,
    ExperimentListItem,
    ExperimentMove,
    ExperimentOut,
    ExperimentPatch,
    GCPolicyPatch,
)
from stalwart_master.schemas.search import SearchPreviewIn
from stalwart_master.schemas.steering import ResourcesPatch
from stalwart_master.schemas.versions import (
    ExperimentContinue,
    ExperimentContinued,
    ExperimentFork,
    ExperimentVersion,
)
from stalwart_master.searcher.preview import preview_search
from stalwart_master.services import authz
from stalwart_master.services import checkpoints as checkpoints_service
from stalwart_master.services import experiments as experiments_service
from stalwart_master.services import steering as steering_service
from stalwart_master.services import versions as versions_service
from stalwart_master.services.experiments import ExperimentFilter, ExperimentSummary, OrderBy
from stalwart_master.services.states import ExperimentState

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/v1/experiments",
    tags=["experiments"],
    responses=problem_responses(401, 404),
)
ExperimentId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post(
    "",
    response_model=ExperimentCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(400, 413, 422),
)
def create_experiment(
    body: ExperimentCreate, caller: UserCaller, session: SessionDep, settings: SettingsDep, request: Request
) -> ExperimentCreated:
    warnings: list[ConfigWarning] = []
    experiment = experiments_service.create_experiment(
        session,
        caller.user,
        body.config,
        context_sha256=body.context,
        paused=body.paused,
        parent_id=body.parent_id,
        defaults=settings.effective_experiment_defaults(),
        max_config_bytes=settings.limits.max_config_bytes,
        max_trials=settings.limits.max_trials,
        project_id=body.project_id,
        warnings=warnings,
    )
    audit.record(session, caller, "experiment.create", "experiment", experiment.id)
    session.commit()
    wake_scheduler(request)
    created = ExperimentCreated.model_validate(experiment)
    created.warnings = [ConfigWarningOut(field=w.field, message=w.message) for w in warnings]
    return created


@router.get("", response_model=Page[ExperimentListItem], responses=problem_responses(422))
def list_experiments(
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    state: Annotated[list[ExperimentState], Query()] = [],  # noqa: B006 (FastAPI copies defaults)
    label: Annotated[list[Text], Query(max_length=100)] = [],  # noqa: B006
    name: Annotated[Text | None, Query(max_length=256)] = None,
    q: Annotated[
        Text | None,
        Query(max_length=256, description="Part of the name or description (any case), or the id."),
    ] = None,
    owner: Annotated[Text | None, Query(max_length=128)] = None,
    archived: bool | None = None,
    workspace_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    project_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    sort: Annotated[OrderBy | None, Query(description="Sort key; `order_by` is its older name.")] = None,
    order_by: OrderBy = "id",
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Page[ExperimentListItem]:
    """Experiments of the workspaces the caller has a role in, a page at a time, with their trials'
    progress, count and best searcher metric; ties in the sort key go by id."""
    flt = ExperimentFilter(
        states=state,
        labels=label,
        name=name,
        q=q.strip() or None if q else None,
        owner=owner,
        archived=archived,
        workspace_ids=authz.readable_workspace_ids(session, user),
        workspace_id=workspace_id,
        project_id=project_id,
        order_by=sort or order_by,
        descending=order == "desc",
        limit=min(limit, settings.limits.max_page_limit),
        offset=offset,
    )
    summaries, total = experiments_service.list_experiments(session, flt)
    now = utcnow()
    items = [_list_item(summary, now) for summary in summaries]
    return Page[ExperimentListItem](items=items, total=total, limit=flt.limit, offset=offset)


def _list_item(summary: ExperimentSummary, now: dt.datetime) -> ExperimentListItem:
    experiment = summary.experiment
    # started_at is the creation: a queued experiment has started, as in Determined's table.
    duration = ((experiment.ended_at or now) - experiment.created_at).total_seconds()
    return ExperimentListItem.model_validate(
        {
            **ExperimentOut.model_validate(experiment).model_dump(),
            "progress": summary.progress,
            "trial_count": summary.trial_count,
            "best_metric": summary.best_metric,
            "searcher_metric": summary.searcher_metric,
            "project_name": summary.project_name,
            "workspace_id": summary.workspace_id,
            "workspace_name": summary.workspace_name,
            "started_at": experiment.created_at,
            "duration_seconds": max(0.0, duration),
        }
    )


@router.get("/{experiment_id}", response_model=ExperimentDetail)
def get_experiment(experiment_id: ExperimentId, user: CurrentUser, session: SessionDep) -> ExperimentDetail:
    return ExperimentDetail.model_validate(authz.experiment_for(session, user, experiment_id))


@router.post("/{experiment_id}/move", response_model=ExperimentDetail, responses=problem_responses(403))
def move_experiment(
    experiment_id: ExperimentId, body: ExperimentMove, caller: UserCaller, session: SessionDep
) -> ExperimentDetail:
    """Into another project (and so perhaps another workspace, with that workspace's roles)."""
    experiment = experiments_service.move_experiment(session, caller.user, experiment_id, body.project_id)
    audit.record(
        session, caller, "experiment.move", "experiment", experiment_id, {"project_id": body.project_id}
    )
    session.commit()
    return ExperimentDetail.model_validate(experiment)


@router.post(
    "/{experiment_id}/fork",
    response_model=ExperimentCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(400, 403, 413, 422),
)
def fork_experiment(
    experiment_id: ExperimentId,
    body: ExperimentFork,
    caller: UserCaller,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> ExperimentCreated:
    """A new experiment with this one as parent: its config as submitted with ``config_overrides``
    merged over it, the same context, in the same project (Determined's fork)."""
    warnings: list[ConfigWarning] = []
    experiment = versions_service.fork_experiment(
        session,
        caller.user,
        experiment_id,
        body.config_overrides,
        paused=body.paused,
        defaults=settings.effective_experiment_defaults(),
        max_config_bytes=settings.limits.max_config_bytes,
        max_trials=settings.limits.max_trials,
        warnings=warnings,
    )
    audit.record(
        session, caller, "experiment.fork", "experiment", experiment.id, {"parent_id": experiment_id}
    )
    session.commit()
    wake_scheduler(request)
    forked = ExperimentCreated.model_validate(experiment)
    forked.warnings = [ConfigWarningOut(field=w.field, message=w.message) for w in warnings]
    return forked


@router.post(
    "/{experiment_id}/continue",
    response_model=ExperimentContinued,
    responses=problem_responses(403, 409, 413, 422),
)
def continue_experiment(
    experiment_id: ExperimentId,
    body: ExperimentContinue,
    caller: UserCaller,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> ExperimentContinued:
    """A terminal experiment runs again: its ERROR and CANCELED trials (or its single trial) resume
    from their latest checkpoints as new runs (Determined's ``det e continue``)."""
    experiment, resumed = versions_service.continue_experiment(
        session,
        caller.user,
        experiment_id,
        body.config_overrides,
        max_config_bytes=settings.limits.max_config_bytes,
    )
    answer = ExperimentContinued(
        **ExperimentDetail.model_validate(experiment).model_dump(), resumed_trial_ids=[t.id for t in resumed]
    )
    audit.record(
        session,
        caller,
        "experiment.continue",
        "experiment",
        experiment_id,
        {"config_overrides": sorted(body.config_overrides), "trial_ids": answer.resumed_trial_ids},
    )
    session.commit()
    wake_scheduler(request)
    return answer


@router.get("/{experiment_id}/versions", response_model=list[ExperimentVersion])
def experiment_versions(
    experiment_id: ExperimentId, user: CurrentUser, session: SessionDep
) -> list[ExperimentVersion]:
    """The fork tree this experiment belongs to: its root ancestor and every descendant, by id.
    Experiments the caller cannot see are left out."""
    return [
        ExperimentVersion.model_validate(e)
        for e in versions_service.version_tree(session, user, experiment_id)
    ]


@router.patch("/{experiment_id}", response_model=ExperimentDetail, responses=problem_responses(403, 409, 422))
def patch_experiment(
    experiment_id: ExperimentId, body: ExperimentPatch, user: CurrentUser, session: SessionDep
) -> ExperimentDetail:
    """Name, description and labels; the owner (as an editor) or a workspace admin."""
    experiment = experiments_service.update_experiment(
        session, user, experiment_id, name=body.name, description=body.description, labels=body.labels
    )
    session.commit()
    return ExperimentDetail.model_validate(experiment)


@router.patch(
    "/{experiment_id}/gc-policy", response_model=ExperimentDetail, responses=problem_responses(403, 409, 422)
)
def set_gc_policy(
    experiment_id: ExperimentId, body: GCPolicyPatch, caller: UserCaller, session: SessionDep
) -> ExperimentDetail:
    """Change save_experiment_best / save_trial_best / save_trial_latest; GC runs with them at once."""
    experiment = checkpoints_service.set_gc_policy(
        session,
        caller.user,
        experiment_id,
        save_experiment_best=body.save_experiment_best,
        save_trial_best=body.save_trial_best,
        save_trial_latest=body.save_trial_latest,
    )
    answer = ExperimentDetail.model_validate(experiment)
    audit.record(session, caller, "experiment.gc_policy", "experiment", experiment_id, body.model_dump())
    session.commit()
    return answer


@router.patch(
    "/{experiment_id}/resources", response_model=ExperimentDetail, responses=problem_responses(403, 409, 422)
)
def set_resources(
    experiment_id: ExperimentId,
    body: ResourcesPatch,
    caller: UserCaller,
    session: SessionDep,
    request: Request,
) -> ExperimentDetail:
    """Determined's ``set priority|weight|max-slots``: stored in ``resources``; the scheduler's next
    pass uses the priority (queued and running runs too) and max_slots."""
    experiment = steering_service.set_resources(
        session,
        caller.user,
        experiment_id,
        priority=body.priority,
        weight=body.weight,
        max_slots=body.max_slots,
    )
    answer = ExperimentDetail.model_validate(experiment)
    changes = body.model_dump(exclude_none=True)
    audit.record(session, caller, "experiment.resources", "experiment", experiment_id, changes)
    session.commit()
    wake_scheduler(request)
    return answer


def _verb_route(verb: str) -> None:
    def run_verb(
        experiment_id: ExperimentId, caller: UserCaller, session: SessionDep, request: Request
    ) -> ExperimentDetail:
        experiment = experiments_service.apply_verb(session, caller.user, experiment_id, verb)
        audit.record(session, caller, f"experiment.{verb}", "experiment", experiment_id)
        session.commit()
        wake_scheduler(request)
        return ExperimentDetail.model_validate(experiment)

    run_verb.__name__ = f"{verb}_experiment"
    router.add_api_route(
        f"/{{experiment_id}}/{verb}",
        run_verb,
        methods=["POST"],
        response_model=ExperimentDetail,
        responses=problem_responses(403, 409),
        summary=f"{verb.capitalize()} an experiment",
    )


for _verb in ("pause", "activate", "cancel", "kill", "archive", "unarchive"):
    _verb_route(_verb)


@router.delete(
    "/{experiment_id}",
    response_model=ExperimentDetail,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(403, 409),
)
def delete_experiment(
    experiment_id: ExperimentId, caller: UserCaller, session: SessionDep
) -> ExperimentDetail:
    """Marks it DELETING now; a Celery job removes it (and its context if unshared) in the background."""
    experiment = experiments_service.apply_verb(session, caller.user, experiment_id, "delete")
    answer = ExperimentDetail.model_validate(experiment)
    audit.record(session, caller, "experiment.delete", "experiment", experiment_id)
    session.commit()
    enqueue_experiment_deletion(experiment_id)
    return answer


@router.post("/preview", responses=problem_responses(400, 413, 422))
def preview_experiment_search(
    body: SearchPreviewIn, caller: UserCaller, settings: SettingsDep
) -> dict[str, Any]:
    """Determined's ``preview-search``: the trials the config's searcher would create and how far
    each trains, from the validated config (422 with field paths); nothing is created."""
    return preview_search(
        body.config,
        defaults=settings.effective_experiment_defaults(),
        max_config_bytes=settings.limits.max_config_bytes,
        max_trials=settings.limits.max_trials,
        limit=body.limit,
    )
