"""Experiments: creation from a validated config, queries, edits and lifecycle verbs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from stalwart_master.db.orm import Experiment, User, utcnow
from stalwart_master.errors import Conflict, Forbidden, InvalidTransition, NotFound
from stalwart_master.expconf import parse_experiment_config
from stalwart_master.services import allocations as allocations_service
from stalwart_master.services import contexts as contexts_service
from stalwart_master.services import models as models_service
from stalwart_master.services.states import TERMINAL, ExperimentState, next_state

log = logging.getLogger(__name__)

OrderBy = Literal["id", "name", "state", "created_at", "ended_at"]


@dataclass
class ExperimentFilter:
    states: list[ExperimentState] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    name: str | None = None
    owner: str | None = None
    archived: bool | None = None
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
) -> Experiment:
    parsed = parse_experiment_config(config_yaml, defaults, max_bytes=max_config_bytes)
    if context_sha256 is not None:
        contexts_service.get_context(session, context_sha256)  # 404 before anything is written
    if parent_id is not None:
        get_experiment(session, parent_id)
    data = parsed.data
    experiment = Experiment(
        name=data.get("name") or "",
        description=data.get("description") or "",
        labels=list(data.get("labels") or []),
        state=ExperimentState.PAUSED if paused else ExperimentState.ACTIVE,
        config=data,
        original_config=parsed.original,
        owner_id=owner.id,
        parent_id=parent_id,
        context_sha256=context_sha256,
    )
    session.add(experiment)
    session.flush()
    allocations_service.start_searcher(session, experiment, max_trials=max_trials)
    if not experiment.name:  # Determined names unnamed experiments after their id
        experiment.name = f"Experiment {experiment.id}"
        experiment.config = {**data, "name": experiment.name}
        session.flush()
    session.refresh(experiment)
    log.info("experiment %s created by %s in state %s", experiment.id, owner.username, experiment.state)
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
    if flt.owner:
        query = query.join(User, Experiment.owner_id == User.id).where(User.username == flt.owner)
    if flt.archived is not None:
        query = query.where(Experiment.archived.is_(flt.archived))
    return query


def list_experiments(session: Session, flt: ExperimentFilter) -> tuple[list[Experiment], int]:
    total = session.scalar(_filtered(select(func.count(Experiment.id)), flt)) or 0
    column = getattr(Experiment, flt.order_by)
    order = column.desc().nulls_last() if flt.descending else column.asc().nulls_last()
    tiebreak = Experiment.id.desc() if flt.descending else Experiment.id.asc()
    query = _filtered(select(Experiment), flt).order_by(order, tiebreak).limit(flt.limit).offset(flt.offset)
    return list(session.scalars(query)), total


def _require_owner(actor: User, experiment: Experiment) -> None:
    if not actor.admin and experiment.owner_id != actor.id:
        raise Forbidden(f"experiment {experiment.id} belongs to another user")


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
    _require_owner(actor, experiment)
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
    _require_owner(actor, experiment)
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
