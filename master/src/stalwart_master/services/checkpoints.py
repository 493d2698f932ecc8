"""Checkpoints as users and trials act on them: describe, delete, report corruption, set the GC policy."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from stalwart_master.db.orm import Allocation, Checkpoint, Experiment, Metric, Token, Trial, User
from stalwart_master.errors import Conflict, Forbidden, InvalidTransition, NotFound
from stalwart_master.services import experiments as experiments_service
from stalwart_master.services import gc as gc_service
from stalwart_master.services import models as models_service
from stalwart_master.services import trials as trials_service
from stalwart_master.services.states import TERMINAL, ExperimentState

log = logging.getLogger(__name__)


@dataclass
class CheckpointDetail:
    """What a checkpoint row alone does not say."""

    experiment_id: int
    model_versions: list[str] = field(default_factory=list)
    searcher_metric: float | None = None


def details(session: Session, checkpoints: Sequence[Checkpoint]) -> dict[uuid.UUID, CheckpointDetail]:
    """Experiment, protecting model versions and searcher metric of each checkpoint, in two queries."""
    if not checkpoints:
        return {}
    uuids = [c.uuid for c in checkpoints]
    metric_name = Experiment.config["searcher"]["metric"].astext
    value = (
        select(Metric.values[metric_name])
        .where(
            Metric.trial_id == Checkpoint.trial_id,
            Metric.group == "validation",
            Metric.steps_completed == Checkpoint.steps_completed,
            Metric.archived.is_(False),
        )
        .order_by(Metric.run_id.desc())
        .limit(1)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Checkpoint.uuid, Trial.experiment_id, value)
        .join(Trial, Trial.id == Checkpoint.trial_id)
        .join(Experiment, Experiment.id == Trial.experiment_id)
        .where(Checkpoint.uuid.in_(uuids))
    )
    versions = models_service.versions_protecting(session, uuids)
    found = {
        ckpt: CheckpointDetail(experiment_id, versions.get(ckpt, []), gc_service.metric_value(raw))
        for ckpt, experiment_id, raw in rows
    }
    return found


def _require_owner(session: Session, actor: User, experiment: Experiment) -> None:
    experiments_service.require_change(session, actor, experiment)


def delete_checkpoint(session: Session, actor: User, checkpoint_uuid: uuid.UUID) -> Checkpoint:
    """Ask GC to delete one checkpoint; it becomes DELETED once its storage is gone.

    Refused (409) for a checkpoint registered as a model version or the warm-start source of a
    trial that has not ended. Deleting a DELETED checkpoint changes nothing.
    """
    checkpoint = trials_service.get_checkpoint(session, checkpoint_uuid)
    trial = trials_service.get_trial(session, checkpoint.trial_id)
    experiment = experiments_service.get_experiment(session, trial.experiment_id)
    _require_owner(session, actor, experiment)
    if checkpoint.state == "DELETED":
        return checkpoint
    if experiment.state == ExperimentState.DELETING:
        raise InvalidTransition(f"experiment {experiment.id} is being deleted")
    versions = models_service.versions_protecting(session, [checkpoint_uuid]).get(checkpoint_uuid)
    if versions:
        raise Conflict(
            f"checkpoint {checkpoint_uuid} is registered as model version {', '.join(versions)}; "
            "it cannot be deleted",
            extra={"model_versions": versions},
        )
    starting = session.scalars(
        select(Trial.id).where(
            Trial.warm_start_checkpoint == checkpoint_uuid,
            Trial.state.not_in([s.value for s in TERMINAL]),
        )
    ).all()
    if starting:
        raise Conflict(
            f"checkpoint {checkpoint_uuid} is the warm start of trial(s) "
            f"{', '.join(map(str, starting))} that have not ended; it cannot be deleted"
        )
    gc_service.request_gc(
        session, experiment.id, f"checkpoint deleted by {actor.username}", [checkpoint_uuid]
    )
    log.info("checkpoint %s (trial %s): deletion requested by %s", checkpoint_uuid, trial.id, actor.username)
    return checkpoint


def report_corrupt(
    session: Session, allocation: Allocation, checkpoint_uuid: uuid.UUID, reason: str
) -> uuid.UUID | None:
    """A trial found a checkpoint unreadable: CORRUPTED, and the trial falls back to an older one.

    Returns what the trial should try next: its newest COMPLETED checkpoint other than this one,
    else its warm-start checkpoint if that is still usable, else None.
    """
    # Lock order checkpoint, then trial: the same as GC's, so the two never deadlock.
    checkpoint = session.get(Checkpoint, checkpoint_uuid, with_for_update=True)
    if checkpoint is None:
        raise NotFound(f"checkpoint {checkpoint_uuid} not found")
    trial = trials_service.get_trial(session, allocation.trial_id, for_update=True)
    if checkpoint.trial_id != trial.id and trial.warm_start_checkpoint != checkpoint_uuid:
        raise Forbidden(f"checkpoint {checkpoint_uuid} is neither trial {trial.id}'s nor its warm start")
    if checkpoint.state == "COMPLETED":
        checkpoint.state = "CORRUPTED"
        checkpoint.corrupt_reason = reason
        log.warning(
            "checkpoint %s (trial %s, allocation %s) is corrupt: %s",
            checkpoint_uuid,
            checkpoint.trial_id,
            allocation.id,
            reason,
        )
    session.flush()
    gc_service.repoint_latest(session, {trial.id, checkpoint.trial_id})
    fallback = gc_service.newest_completed(session, trial.id, other_than=checkpoint_uuid)
    if fallback is None and trial.warm_start_checkpoint not in (None, checkpoint_uuid):
        start = session.get(Checkpoint, trial.warm_start_checkpoint)
        fallback = start.uuid if start is not None and start.state == "COMPLETED" else None
    # The run now starts further back: so does the metric history it continues.
    trials_service.start_run_from(session, trial, allocation, fallback)
    return fallback


def set_gc_policy(
    session: Session,
    actor: User,
    experiment_id: int,
    *,
    save_experiment_best: int | None = None,
    save_trial_best: int | None = None,
    save_trial_latest: int | None = None,
) -> Experiment:
    """Store new save_* values in the experiment's config and GC with them at once (also once ended)."""
    experiment = experiments_service.get_experiment(session, experiment_id, for_update=True)
    _require_owner(session, actor, experiment)
    if experiment.state == ExperimentState.DELETING:
        raise InvalidTransition(f"experiment {experiment.id} is being deleted")
    storage = dict(experiment.config.get("checkpoint_storage") or {})
    if not storage:
        raise Conflict(f"experiment {experiment.id} has no checkpoint_storage to set a GC policy on")
    changes = {
        "save_experiment_best": save_experiment_best,
        "save_trial_best": save_trial_best,
        "save_trial_latest": save_trial_latest,
    }
    storage.update({key: value for key, value in changes.items() if value is not None})
    experiment.config = {**experiment.config, "checkpoint_storage": storage}
    session.flush()
    gc_service.request_gc(session, experiment.id, f"GC policy changed by {actor.username}")
    log.info(
        "experiment %s: GC policy %s set by %s",
        experiment.id,
        gc_service.GCPolicy.of(experiment.config),
        actor.username,
    )
    return experiment


def require_allocation_may_read(session: Session, token: Token, checkpoint: Checkpoint) -> None:
    """A run reads checkpoints of its own experiment and its trial's warm start, nothing else.

    Anything else answers 404, as if it did not exist: a trial learns nothing of other users' work.
    """
    allocation = session.get(Allocation, token.allocation_id) if token.allocation_id else None
    trial = session.get(Trial, allocation.trial_id) if allocation else None
    source = session.get(Trial, checkpoint.trial_id)
    if (
        trial is None
        or source is None
        or (source.experiment_id != trial.experiment_id and checkpoint.uuid != trial.warm_start_checkpoint)
    ):
        raise NotFound(f"checkpoint {checkpoint.uuid} not found")
