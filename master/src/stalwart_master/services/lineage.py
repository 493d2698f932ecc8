"""Where a checkpoint came from: warm starts and the parent chain back to the first checkpoint.

Each checkpoint records ``parent_uuid``, the checkpoint its run restored from (its own trial's
latest, or the warm-start checkpoint of a fresh trial), so following parents walks across trials
and experiments.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stalwart_master.db.orm import Checkpoint, Experiment, Trial, User
from stalwart_master.errors import ErrorList, NotFound
from stalwart_master.services import authz

# A chain longer than this is cut: no honest history is that deep, a corrupt one may be endless.
MAX_CHAIN = 10_000


def resolve_warm_start(session: Session, config: dict[str, Any]) -> uuid.UUID | None:
    """The checkpoint trials of an experiment with this config start from, or None.

    Raises ``Invalid`` naming ``searcher.source_checkpoint_uuid`` or ``searcher.source_trial_id``
    when the source is unknown or has nothing usable.
    """
    searcher = config.get("searcher") or {}
    errors = ErrorList()
    found: uuid.UUID | None = None
    if searcher.get("source_checkpoint_uuid"):
        path = "searcher.source_checkpoint_uuid"
        checkpoint = session.get(Checkpoint, uuid.UUID(str(searcher["source_checkpoint_uuid"])))
        if checkpoint is None:
            errors.add(path, f"checkpoint {searcher['source_checkpoint_uuid']} not found")
        elif checkpoint.state != "COMPLETED":
            errors.add(path, f"checkpoint {checkpoint.uuid} is {checkpoint.state}, not COMPLETED")
        else:
            found = checkpoint.uuid
    elif searcher.get("source_trial_id") is not None:
        path = "searcher.source_trial_id"
        trial = session.get(Trial, int(searcher["source_trial_id"]))
        if trial is None:
            errors.add(path, f"trial {searcher['source_trial_id']} not found")
        else:
            found = _newest_completed(session, trial)
            if found is None:
                errors.add(path, f"trial {trial.id} has no completed checkpoint to start from")
    errors.raise_if_any(title="Invalid experiment config")
    return found


def _newest_completed(session: Session, trial: Trial) -> uuid.UUID | None:
    # The trial's latest checkpoint, unless it was lost since: then the newest one still usable.
    if trial.latest_checkpoint is not None:
        latest = session.get(Checkpoint, trial.latest_checkpoint)
        if latest is not None and latest.state == "COMPLETED":
            return latest.uuid
    return session.scalar(
        select(Checkpoint.uuid)
        .where(Checkpoint.trial_id == trial.id, Checkpoint.state == "COMPLETED")
        .order_by(Checkpoint.steps_completed.desc(), Checkpoint.created_at.desc())
        .limit(1)
    )


def warm_start_of(session: Session, experiment: Experiment) -> uuid.UUID | None:
    """What the experiment's first trials start from; later trials take the same checkpoint even
    when the source trial has checkpointed again since."""
    return session.scalar(
        select(Trial.warm_start_checkpoint)
        .where(Trial.experiment_id == experiment.id, Trial.warm_start_checkpoint.is_not(None))
        .limit(1)
    )


@dataclass(frozen=True)
class Lineage:
    checkpoint: Checkpoint
    chain: list[Checkpoint]  # parent first, then grandparent, ... up to the root
    missing_parent: uuid.UUID | None  # a parent recorded but no longer (or never) known
    trials: list[Trial]  # in order of first appearance along checkpoint + chain
    experiments: list[Experiment]  # likewise


def checkpoint_lineage(session: Session, checkpoint_uuid: uuid.UUID) -> Lineage:
    checkpoint = session.get(Checkpoint, checkpoint_uuid)
    if checkpoint is None:
        raise NotFound(f"checkpoint {checkpoint_uuid} not found")
    chain: list[Checkpoint] = []
    seen = {checkpoint.uuid}
    missing: uuid.UUID | None = None
    parent = checkpoint.parent_uuid
    # Cycle-safe: a parent already seen ends the walk (a checkpoint cannot be its own ancestor).
    while parent is not None and parent not in seen and len(chain) < MAX_CHAIN:
        found = session.get(Checkpoint, parent)
        if found is None:
            missing = parent
            break
        chain.append(found)
        seen.add(found.uuid)
        parent = found.parent_uuid
    trial_ids = list(dict.fromkeys(c.trial_id for c in [checkpoint, *chain]))
    trials_by_id = {t.id: t for t in session.scalars(select(Trial).where(Trial.id.in_(trial_ids)))}
    trials = [trials_by_id[i] for i in trial_ids if i in trials_by_id]
    experiment_ids = list(dict.fromkeys(t.experiment_id for t in trials))
    experiments_by_id = {
        e.id: e for e in session.scalars(select(Experiment).where(Experiment.id.in_(experiment_ids)))
    }
    experiments = [experiments_by_id[i] for i in experiment_ids if i in experiments_by_id]
    return Lineage(checkpoint, chain, missing, trials, experiments)


def lineage_for(session: Session, reader: User, checkpoint_uuid: uuid.UUID) -> Lineage:
    """The lineage as ``reader`` may see it: the chain stops before the first ancestor in a
    workspace they have no role in, and only the trials and experiments left in it are named."""
    lineage = checkpoint_lineage(session, checkpoint_uuid)
    authz.checkpoint_for(session, reader, lineage.checkpoint)
    visible = authz.readable_workspace_ids(session, reader)
    if visible is None:
        return lineage
    for index, ancestor in enumerate(lineage.chain):
        if authz.checkpoint_workspace(session, ancestor)[0] not in visible:
            lineage = dataclasses.replace(lineage, chain=lineage.chain[:index], missing_parent=None)
            break
    seen = {lineage.checkpoint.trial_id, *(c.trial_id for c in lineage.chain)}
    trials = [t for t in lineage.trials if t.id in seen]
    experiments = [e for e in lineage.experiments if e.id in {t.experiment_id for t in trials}]
    return dataclasses.replace(lineage, trials=trials, experiments=experiments)
