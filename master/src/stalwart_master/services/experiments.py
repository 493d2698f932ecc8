"""Experiments: creation from a validated config, queries, edits and lifecycle verbs."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Select, case, func, or_, select, true
from sqlalchemy.orm import Session, contains_eager

from stalwart_master.db.orm import (
    DEFAULT_PROJECT_ID,
    Checkpoint,
    Experiment,
    Project,
    Trial,
    User,
    Workspace,
    utcnow,
)
from stalwart_master.errors import (
    Conflict,
    ErrorList,
    FieldError,
    Forbidden,
    Invalid,
    InvalidTransition,
    NotFound,
)
from stalwart_master.expconf import parse_experiment_config
from stalwart_master.expconf.determined import ConfigWarning
from stalwart_master.services import allocations as allocations_service
from stalwart_master.services import authz
from stalwart_master.services import contexts as contexts_service
from stalwart_master.services import models as models_service
from stalwart_master.services import storage as storage_service
from stalwart_master.services.states import TERMINAL, ExperimentState, next_state

log = logging.getLogger(__name__)

OrderBy = Literal[
    "id", "name", "state", "owner", "created_at", "ended_at", "progress", "best_metric", "trial_count"
]


@dataclass
class ExperimentFilter:
    states: list[ExperimentState] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    name: str | None = None
    # Any case, part of the name or description; digits also match the id exactly.
    q: str | None = None
    owner: str | None = None
    archived: bool | None = None
    # None: every workspace (a cluster admin); otherwise only experiments inside these.
    workspace_ids: set[int] | None = None
    workspace_id: int | None = None
    project_id: int | None = None
    order_by: OrderBy = "id"
    descending: bool = True
    limit: int = 100
    offset: int = 0


def create_experiment(
    session: Session,
    owner: User,
    config_yaml: str,
    *,
    context_sha256: str | None,
    paused: bool = False,
    parent_id: int | None = None,
    defaults: dict[str, Any] | None = None,
    max_config_bytes: int = 1024 * 1024,
    max_trials: int = 10_000,
    project_id: int = DEFAULT_PROJECT_ID,
    warnings: list[ConfigWarning] | None = None,
) -> Experiment:
    """Validate, authorise and record a new experiment with its first trials.

    ``warnings`` (when given) receives one entry per Determined field the config holds that is
    accepted but ignored; the caller shows them to the user.
    """
    parsed = parse_experiment_config(config_yaml, defaults, max_bytes=max_config_bytes)
    storage_service.check_experiment_storage(parsed.data)  # 422 at checkpoint_storage.<field>
    project_id = _project_from_config(session, owner, parsed.data, project_id)
    authz.project_to_create_in(session, owner, project_id)
    if context_sha256 is not None:
        contexts_service.get_context(session, context_sha256)  # 404 before anything is written
    if parent_id is not None:
        authz.experiment_for(session, owner, parent_id)
    _check_warm_start_access(session, owner, parsed.data)
    data = parsed.data
    experiment = Experiment(
        name=data.get("name") or "",
        description=data.get("description") or "",
        labels=list(data.get("labels") or []),
        state=ExperimentState.PAUSED if paused else ExperimentState.ACTIVE,
        config=data,
        original_config=parsed.original,
        owner_id=owner.id,
        project_id=project_id,
        parent_id=parent_id,
        context_sha256=context_sha256,
    )
    session.add(experiment)
    session.flush()
    allocations_service.start_searcher(session, experiment, max_trials=max_trials)
    if paused:
        _set_trial_states(session, experiment, "ACTIVE", "PAUSED")
    if not experiment.name:  # Determined names unnamed experiments after their id
        experiment.name = f"Experiment {experiment.id}"
        experiment.config = {**data, "name": experiment.name}
        session.flush()
    session.refresh(experiment)
    log.info("experiment %s created by %s in state %s", experiment.id, owner.username, experiment.state)
    for warning in parsed.warnings:
        log.info("experiment %s: config field %s %s", experiment.id, warning.field, warning.message)
    if warnings is not None:
        warnings.extend(parsed.warnings)
    return experiment


def _project_from_config(session: Session, owner: User, config: dict[str, Any], project_id: int) -> int:
    """Determined's ``workspace``/``project`` names, resolved to the project they name.

    A workspace the owner cannot see reads as one that does not exist; one they can see but may not
    create in is refused at the field too, so the config is what the user fixes.
    """
    workspace_name, project_name = config.get("workspace"), config.get("project")
    if workspace_name is None or project_name is None:
        return project_id
    workspace = session.scalar(select(Workspace).where(Workspace.name == workspace_name))
    if workspace is None or authz.role_in(session, owner, workspace.id) is None:
        raise _config_error("workspace", f"workspace {workspace_name!r} not found")
    project = session.scalar(
        select(Project).where(Project.workspace_id == workspace.id, Project.name == project_name)
    )
    if project is None:
        raise _config_error("project", f"project {project_name!r} not found in workspace {workspace_name!r}")
    if project_id not in (DEFAULT_PROJECT_ID, project.id):
        raise _config_error("project", f"is project {project.id}, but the request names project {project_id}")
    try:
        authz.project_to_create_in(session, owner, project.id)
    except Forbidden as exc:
        raise _config_error("project", f"cannot create experiments here: {exc}") from None
    return project.id


def _config_error(path: str, message: str) -> Invalid:
    return Invalid([FieldError(path, message)], title="Invalid experiment config")


def _set_trial_states(session: Session, experiment: Experiment, old: str, new: str) -> None:
    """Trials follow their experiment between ACTIVE and PAUSED, as in Determined; trials that have
    ended (or are stopping) keep their state."""
    for trial in session.scalars(
        select(Trial).where(Trial.experiment_id == experiment.id, Trial.state == old).with_for_update()
    ):
        trial.state = new


def _check_warm_start_access(session: Session, owner: User, config: dict[str, Any]) -> None:
    """Starting from a checkpoint reads it: the owner needs read access to where it lives.

    One the owner cannot see is reported exactly like one that does not exist.
    """
    searcher = config.get("searcher") or {}
    errors = ErrorList()
    try:
        if searcher.get("source_checkpoint_uuid"):
            checkpoint = session.get(Checkpoint, uuid.UUID(str(searcher["source_checkpoint_uuid"])))
            if checkpoint is not None:
                authz.checkpoint_for(session, owner, checkpoint)
        elif searcher.get("source_trial_id") is not None:
            trial = session.get(Trial, int(searcher["source_trial_id"]))
            if trial is not None:
                authz.trial_for(session, owner, trial.id)
    except NotFound:
        key = "source_checkpoint_uuid" if searcher.get("source_checkpoint_uuid") else "source_trial_id"
        errors.add(
            f"searcher.{key}", f"{key.removeprefix('source_').replace('_', ' ')} {searcher[key]} not found"
        )
    errors.raise_if_any(title="Invalid experiment config")


def move_experiment(session: Session, actor: User, experiment_id: int, project_id: int) -> Experiment:
    """Moving out needs change rights here, moving in the editor role in the destination."""
    experiment = get_experiment(session, experiment_id, for_update=True)
    require_change(session, actor, experiment)
    destination: Project = authz.project_to_create_in(session, actor, project_id)
    experiment.project_id = destination.id
    session.flush()
    return experiment


def get_experiment(session: Session, experiment_id: int, *, for_update: bool = False) -> Experiment:
    query = select(Experiment).where(Experiment.id == experiment_id)
    if for_update:  # serialise concurrent verbs on one experiment
        query = query.with_for_update(of=Experiment)
    experiment = session.scalar(query)
    if experiment is None:
        raise NotFound(f"experiment {experiment_id} not found")
    return experiment


def _filtered(query: Select[Any], flt: ExperimentFilter) -> Select[Any]:
    if flt.states:
        query = query.where(Experiment.state.in_([s.value for s in flt.states]))
    if flt.labels:
        query = query.where(Experiment.labels.contains(flt.labels))
    if flt.name:
        query = query.where(Experiment.name.icontains(flt.name, autoescape=True))
    if flt.q:
        text_matches = [
            Experiment.name.icontains(flt.q, autoescape=True),
            Experiment.description.icontains(flt.q, autoescape=True),
        ]
        if flt.q.isdigit() and int(flt.q) < 2**31:
            text_matches.append(Experiment.id == int(flt.q))
        query = query.where(or_(*text_matches))
    if flt.owner:
        query = query.where(Experiment.owner_id.in_(select(User.id).where(User.username == flt.owner)))
    if flt.archived is not None:
        query = query.where(Experiment.archived.is_(flt.archived))
    if flt.project_id is not None:
        query = query.where(Experiment.project_id == flt.project_id)
    return authz.in_workspaces(query, Experiment.project_id, flt.workspace_ids, flt.workspace_id)


@dataclass(frozen=True)
class ExperimentSummary:
    """An experiment as the experiments table shows it: with what its trials add up to."""

    experiment: Experiment
    trial_count: int
    progress: float | None
    best_metric: float | None
    searcher_metric: str | None
    project_name: str
    workspace_id: int
    workspace_name: str


def _trial_stats() -> Select[Any]:
    return select(
        func.count(Trial.id).label("trial_count"),
        func.avg(Trial.progress).label("progress"),
        func.min(Trial.best_validation).label("lowest"),
        func.max(Trial.best_validation).label("highest"),
    )


def _best(stats: Any) -> Any:
    # Determined's default: smaller is better unless the config says false.
    smaller_is_better = Experiment.config[("searcher", "smaller_is_better")].astext
    return case((smaller_is_better == "false", stats.c.highest), else_=stats.c.lowest)


def _ordered(key: Any, nullable: bool, descending: bool) -> Any:
    # NULLS LAST only where a key can be null: on a NOT NULL column it would hide its index.
    order = key.desc() if descending else key.asc()
    return order.nulls_last() if nullable else order


def _page(flt: ExperimentFilter) -> Any:
    """The ids of one page in order, with their sort key; trial aggregates are computed here only
    when they are the key (then for every filtered experiment, in one grouped pass over trials)."""
    nullable = flt.order_by in ("ended_at", "progress", "best_metric")
    if flt.order_by in ("progress", "best_metric", "trial_count"):
        grouped = _trial_stats().add_columns(Trial.experiment_id).group_by(Trial.experiment_id).subquery()
        keys = {
            "progress": grouped.c.progress,
            "best_metric": _best(grouped),
            "trial_count": func.coalesce(grouped.c.trial_count, 0),
        }
        page = select(Experiment.id, keys[flt.order_by].label("key")).outerjoin(
            grouped, grouped.c.experiment_id == Experiment.id
        )
    elif flt.order_by == "owner":
        page = select(Experiment.id, User.username.label("key")).join(User, User.id == Experiment.owner_id)
    else:
        page = select(Experiment.id, getattr(Experiment, flt.order_by).label("key"))
    key = page.selected_columns.key
    tiebreak = Experiment.id.desc() if flt.descending else Experiment.id.asc()
    page = _filtered(page, flt).order_by(_ordered(key, nullable, flt.descending), tiebreak)
    return page.limit(flt.limit).offset(flt.offset).subquery("page"), nullable


def list_experiments(session: Session, flt: ExperimentFilter) -> tuple[list[ExperimentSummary], int]:
    """One page with what its trials add up to, in one statement: the page is chosen first, then
    each of its experiments gets its trial aggregates from a lateral subquery over
    ix_trials_experiment_id, so the cost follows the page size, not the number of experiments."""
    total = session.scalar(_filtered(select(func.count(Experiment.id)), flt)) or 0
    page, nullable = _page(flt)
    stats = _trial_stats().where(Trial.experiment_id == Experiment.id).lateral("stats")
    tiebreak = page.c.id.desc() if flt.descending else page.c.id.asc()
    query = (
        select(
            Experiment,
            stats.c.trial_count,
            stats.c.progress,
            _best(stats),
            Experiment.config[("searcher", "metric")].astext,
            Project.name,
            Workspace.id,
            Workspace.name,
        )
        .select_from(page)
        .join(Experiment, Experiment.id == page.c.id)
        .join(stats, true())
        .join(User, User.id == Experiment.owner_id)
        .join(Project, Project.id == Experiment.project_id)
        .join(Workspace, Workspace.id == Project.workspace_id)
        .options(contains_eager(Experiment.owner))
        .order_by(_ordered(page.c.key, nullable, flt.descending), tiebreak)
    )
    return [
        ExperimentSummary(
            experiment=row[0],
            trial_count=int(row[1]),
            progress=None if row[2] is None else float(row[2]),
            best_metric=None if row[3] is None else float(row[3]),
            searcher_metric=row[4],
            project_name=row[5],
            workspace_id=row[6],
            workspace_name=row[7],
        )
        for row in session.execute(query)
    ], total


def require_change(session: Session, actor: User, experiment: Experiment) -> None:
    authz.require_change(
        session,
        actor,
        authz.workspace_of_project(session, experiment.project_id),
        experiment.owner_id,
        f"experiment {experiment.id}",
    )


def update_experiment(
    session: Session,
    actor: User,
    experiment_id: int,
    *,
    name: str | None = None,
    description: str | None = None,
    labels: list[str] | None = None,
) -> Experiment:
    experiment = get_experiment(session, experiment_id, for_update=True)
    require_change(session, actor, experiment)
    if experiment.state == ExperimentState.DELETING:
        raise InvalidTransition(f"experiment {experiment.id} is being deleted")
    config = dict(experiment.config)
    if name is not None:
        experiment.name = config["name"] = name
    if description is not None:
        experiment.description = config["description"] = description
    if labels is not None:
        experiment.labels = config["labels"] = list(dict.fromkeys(labels))
    experiment.config = config  # keep the stored config telling the same story as the columns
    session.flush()
    return experiment


def apply_verb(session: Session, actor: User, experiment_id: int, verb: str) -> Experiment:
    """Run one lifecycle verb through the state machine; illegal verbs change nothing."""
    experiment = get_experiment(session, experiment_id, for_update=True)
    require_change(session, actor, experiment)
    target = next_state(verb, experiment.state)
    if verb == "delete" and (registered := models_service.versions_in_experiment(session, experiment.id)):
        raise Conflict(
            f"experiment {experiment.id} has checkpoints registered as model versions "
            f"({', '.join(registered[:5])}{', ...' if len(registered) > 5 else ''}); it cannot be deleted"
        )
    if verb == "archive":
        experiment.archived = True
    elif verb == "unarchive":
        experiment.archived = False
    else:
        if verb in ("pause", "cancel", "kill") and target != experiment.state:
            allocations_service.stop_experiment_runs(session, experiment, kill=verb == "kill")
        if target == ExperimentState.PAUSED and experiment.state == ExperimentState.ACTIVE:
            _set_trial_states(session, experiment, "ACTIVE", "PAUSED")
        elif target != ExperimentState.PAUSED and experiment.state == ExperimentState.PAUSED:
            # activate, or a stop: the trials are live (or stopping) again, not paused.
            _set_trial_states(session, experiment, "PAUSED", "ACTIVE")
        if target != experiment.state:
            log.info(
                "experiment %s: %s -> %s (%s by %s)",
                experiment.id,
                experiment.state,
                target,
                verb,
                actor.username,
            )
            experiment.state = target
        settle(session, experiment)
    session.flush()
    return experiment


def has_running_trials(session: Session, experiment: Experiment) -> bool:
    return bool(allocations_service.live_allocations(session, experiment.id))


def settle(session: Session, experiment: Experiment) -> None:
    """Move a stopping experiment to its terminal state once nothing of it is still running."""
    allocations_service.settle_experiment(session, experiment)
    if ExperimentState(experiment.state) in TERMINAL and experiment.ended_at is None:
        experiment.ended_at = utcnow()


def delete_experiment_now(session: Session, experiment_id: int) -> bool:
    """The background half of delete: remove the row and a context nobody else uses."""
    experiment = session.scalar(
        select(Experiment).where(Experiment.id == experiment_id).with_for_update(of=Experiment)
    )
    if experiment is None:
        return False
    if experiment.state != ExperimentState.DELETING:
        log.warning("experiment %s is %s, not DELETING: left alone", experiment_id, experiment.state)
        return False
    sha = experiment.context_sha256
    session.delete(experiment)
    session.flush()
    if sha is not None:
        contexts_service.delete_if_unreferenced(session, sha)
    log.info("experiment %s deleted", experiment_id)
    return True


def mark_delete_failed(session: Session, experiment_id: int) -> None:
    experiment = session.get(Experiment, experiment_id)
    if experiment is not None and experiment.state == ExperimentState.DELETING:
        experiment.state = ExperimentState.DELETE_FAILED


def deleting_experiment_ids(session: Session) -> list[int]:
    return list(session.scalars(select(Experiment.id).where(Experiment.state == ExperimentState.DELETING)))
