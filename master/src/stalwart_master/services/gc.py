"""Checkpoint garbage collection: which checkpoints a policy lets go, and the request outbox.

The selection is Determined's (``ExperimentCheckpointsToGCRaw``): per experiment, over COMPLETED
checkpoints only, a checkpoint goes when ((its experiment rank > save_experiment_best and its trial
rank > save_trial_best) or it has no validation metric) and it is not among its trial's
save_trial_latest newest. Never deleted: model-version checkpoints, warm-start sources, and the newest
checkpoint of a trial that is still running (the one it would resume from).

Every trigger only inserts a ``gc_requests`` row in the caller's transaction; ``jobs/gc.py`` publishes
it after the commit and the Celery task does the storage work, so a lost broker loses no request.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from stalwart_master.db.orm import Checkpoint, Experiment, GCRequest, Metric, Trial, utcnow
from stalwart_master.services import models as models_service
from stalwart_master.services import trials as trials_service
from stalwart_master.services.states import TERMINAL

log = logging.getLogger(__name__)

# Advisory lock (class, experiment id) held by the one GC run of an experiment.
GC_LOCK_CLASS = 0x53474300
# session.info key: ids of requests this transaction created, published once it commits.
PENDING_KEY = "stalwart.gc_requests"
_POLICY_KEYS = ("save_experiment_best", "save_trial_best", "save_trial_latest")
_TERMINAL_TRIAL_STATES = frozenset(s.value for s in TERMINAL)


@dataclass(frozen=True)
class GCPolicy:
    save_experiment_best: int = 0
    save_trial_best: int = 1
    save_trial_latest: int = 1

    @classmethod
    def of(cls, config: dict[str, Any]) -> GCPolicy:
        """The policy in an experiment's stored config (Determined's defaults where unset)."""
        storage = config.get("checkpoint_storage") or {}
        defaults = cls()
        return cls(**{key: int(storage.get(key, getattr(defaults, key))) for key in _POLICY_KEYS})


@dataclass(frozen=True)
class Candidate:
    """A COMPLETED checkpoint as the selector sees it."""

    uuid: uuid.UUID
    trial_id: int
    steps_completed: int
    created_at: dt.datetime
    value: float | None  # the searcher metric validated at the same step; None when there is none


def select_for_deletion(
    candidates: Sequence[Candidate],
    policy: GCPolicy,
    *,
    smaller_is_better: bool,
    keep: Collection[uuid.UUID] = (),
    live_trials: Collection[int] = (),
) -> list[uuid.UUID]:
    """The uuids the policy deletes, in candidate order. Pure: the oracle tests call it directly.

    Ranks are strict: equal values are ordered by steps, then creation, so every checkpoint has its
    own rank (Determined breaks ties by validation id, i.e. by step too). A trial in ``live_trials``
    keeps its newest checkpoint whatever the policy says.
    """
    sign = 1.0 if smaller_is_better else -1.0

    def by_value(c: Candidate) -> tuple[bool, float, int, dt.datetime, uuid.UUID]:
        return (
            c.value is None,
            sign * c.value if c.value is not None else 0.0,
            c.steps_completed,
            c.created_at,
            c.uuid,
        )

    experiment_rank = {c.uuid: rank for rank, c in enumerate(sorted(candidates, key=by_value), 1)}
    trial_rank: dict[uuid.UUID, int] = {}
    order_rank: dict[uuid.UUID, int] = {}
    protected = set(keep)
    by_trial: dict[int, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_trial[c.trial_id].append(c)
    for trial_id, items in by_trial.items():
        trial_rank.update({c.uuid: rank for rank, c in enumerate(sorted(items, key=by_value), 1)})
        newest_first = sorted(items, key=lambda c: (c.steps_completed, c.created_at, c.uuid), reverse=True)
        order_rank.update({c.uuid: rank for rank, c in enumerate(newest_first, 1)})
        if trial_id in live_trials:
            protected.add(newest_first[0].uuid)
    return [
        c.uuid
        for c in candidates
        if c.uuid not in protected
        and (
            (
                experiment_rank[c.uuid] > policy.save_experiment_best
                and trial_rank[c.uuid] > policy.save_trial_best
            )
            or c.value is None
        )
        and order_rank[c.uuid] > policy.save_trial_latest
    ]


# --- requests (the outbox) ------------------------------------------------------------------------


def request_gc(
    session: Session,
    experiment_id: int,
    reason: str,
    checkpoint_uuids: Iterable[uuid.UUID] | None = None,
) -> GCRequest | None:
    """Record that the experiment needs a GC run; published after the caller's commit.

    Without ``checkpoint_uuids`` it is a policy run, recorded once per transaction and experiment
    (a trial and its experiment ending together need one run, not two).
    """
    pending: dict[tuple[int, str], GCRequest] = session.info.setdefault(PENDING_KEY, {})
    uuids = sorted(set(checkpoint_uuids)) if checkpoint_uuids is not None else None
    if uuids is None and (experiment_id, "policy") in pending:
        return None
    request = GCRequest(experiment_id=experiment_id, reason=reason, checkpoint_uuids=uuids)
    session.add(request)
    session.flush()
    pending[(experiment_id, "policy" if uuids is None else f"explicit-{request.id}")] = request
    return request


def request_purge(session: Session, experiment_id: int) -> GCRequest | None:
    """An explicit request for every checkpoint of an experiment being deleted; None if it has none."""
    uuids = session.scalars(
        select(Checkpoint.uuid)
        .join(Trial, Trial.id == Checkpoint.trial_id)
        .join(Experiment, Experiment.id == Trial.experiment_id)
        .where(
            Trial.experiment_id == experiment_id,
            Experiment.state == "DELETING",
            Checkpoint.state != "DELETED",
        )
    ).all()
    return request_gc(session, experiment_id, "experiment deleted", uuids) if uuids else None


def take_pending(session: Session) -> list[int]:
    """Ids of the requests this session's transaction created; forgets them."""
    pending: dict[tuple[int, str], GCRequest] = session.info.pop(PENDING_KEY, {})
    return sorted(r.id for r in pending.values())


def mark_published(session: Session, request_ids: Collection[int]) -> None:
    if request_ids:
        session.execute(
            update(GCRequest).where(GCRequest.id.in_(list(request_ids))).values(published_at=utcnow())
        )


def unpublished_requests(session: Session, *, min_age: float, stale_after: float, limit: int) -> list[int]:
    """Requests to publish again: never published (broker down) or published long ago and not done."""
    now = utcnow()
    query = (
        select(GCRequest.id)
        .where(
            GCRequest.done_at.is_(None),
            or_(
                GCRequest.published_at.is_(None)
                & (GCRequest.created_at < now - dt.timedelta(seconds=min_age)),
                GCRequest.published_at < now - dt.timedelta(seconds=stale_after),
            ),
        )
        .order_by(GCRequest.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def get_request(session: Session, request_id: int) -> GCRequest | None:
    return session.get(GCRequest, request_id)


def start_requests(session: Session, experiment_id: int) -> list[GCRequest]:
    """Every request of the experiment not yet done; each counts one more attempt."""
    requests = list(
        session.scalars(
            select(GCRequest)
            .where(GCRequest.experiment_id == experiment_id, GCRequest.done_at.is_(None))
            .order_by(GCRequest.id)
        )
    )
    for request in requests:
        request.attempts += 1
    session.flush()
    return requests


def finish_requests(
    session: Session, request_ids: Collection[int], error: str | None = None, *, give_up: bool = False
) -> None:
    """Done (``error`` None), still pending with the last failure recorded, or, with ``give_up``,
    done with its error kept: trying again cannot help (storage the master refuses to touch)."""
    values: dict[str, Any] = {"error": error} if error else {"error": None, "done_at": utcnow()}
    if give_up:
        values["done_at"] = utcnow()
    session.execute(
        update(GCRequest)
        .where(GCRequest.id.in_(list(request_ids)), GCRequest.done_at.is_(None))
        .values(**values)
    )


def prune_requests(session: Session, *, older_than: dt.timedelta) -> int:
    """Forget requests done long ago (one is made per checkpoint registered, so they add up)."""
    result = session.execute(
        delete(GCRequest).where(GCRequest.done_at.is_not(None), GCRequest.done_at < utcnow() - older_than)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- what to delete -------------------------------------------------------------------------------


def metric_value(raw: Any) -> float | None:
    value = trials_service.decode_value(raw)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return None if math.isnan(value) else value  # a diverged (NaN) run ranks like an unvalidated one


def candidates(session: Session, experiment: Experiment) -> list[Candidate]:
    """The experiment's COMPLETED checkpoints with the searcher metric validated at their step."""
    metric_name = str((experiment.config.get("searcher") or {}).get("metric") or "")
    value = (
        select(Metric.values[metric_name])
        .where(
            Metric.trial_id == Checkpoint.trial_id,
            Metric.group == "validation",
            Metric.steps_completed == Checkpoint.steps_completed,
            Metric.archived.is_(False),
        )
        .order_by(Metric.run_id.desc())  # after a restart the newest run's report counts
        .limit(1)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Checkpoint.uuid, Checkpoint.trial_id, Checkpoint.steps_completed, Checkpoint.created_at, value)
        .join(Trial, Trial.id == Checkpoint.trial_id)
        .where(Trial.experiment_id == experiment.id, Checkpoint.state == "COMPLETED")
        .order_by(Checkpoint.trial_id, Checkpoint.steps_completed, Checkpoint.created_at)
    )
    return [Candidate(u, t, s, c, metric_value(v)) for u, t, s, c, v in rows]


def protected_uuids(session: Session, uuids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Of ``uuids``: those registered as model versions or that some trial warm-starts from."""
    if not uuids:
        return set()
    protected = set(models_service.versions_protecting(session, uuids))
    protected.update(
        session.scalars(
            select(Trial.warm_start_checkpoint).where(Trial.warm_start_checkpoint.in_(list(uuids)))
        )
    )
    return protected


def live_trials(session: Session, experiment_id: int) -> dict[int, uuid.UUID | None]:
    """Trials not yet ended, with the checkpoint each would resume from."""
    rows = session.execute(
        select(Trial.id, Trial.latest_checkpoint).where(
            Trial.experiment_id == experiment_id, Trial.state.not_in(list(_TERMINAL_TRIAL_STATES))
        )
    )
    return {trial_id: latest for trial_id, latest in rows}


def lock_doomed(
    session: Session, experiment: Experiment, *, by_policy: bool, explicit: Collection[uuid.UUID]
) -> list[Checkpoint]:
    """Lock and return the checkpoints this run deletes.

    The rows stay locked (FOR UPDATE) until the caller's transaction ends, so a model version
    registered meanwhile waits on its foreign key and, once it can look, finds the row DELETED.
    Protection is checked again after locking for the same reason.
    """
    live = live_trials(session, experiment.id)
    wanted: set[uuid.UUID] = set()
    if by_policy:
        searcher = experiment.config.get("searcher") or {}
        found = candidates(session, experiment)
        resume_points = {latest for latest in live.values() if latest is not None}
        wanted.update(
            select_for_deletion(
                found,
                GCPolicy.of(experiment.config),
                smaller_is_better=bool(searcher.get("smaller_is_better", True)),
                keep=protected_uuids(session, [c.uuid for c in found]) | resume_points,
                live_trials=live,
            )
        )
    wanted.update(explicit)
    if not wanted:
        return []
    rows = list(
        session.scalars(
            select(Checkpoint)
            .join(Trial, Trial.id == Checkpoint.trial_id)
            .where(
                Checkpoint.uuid.in_(sorted(wanted)),
                Trial.experiment_id == experiment.id,
                Checkpoint.state != "DELETED",
            )
            .order_by(Checkpoint.uuid)
            .with_for_update(of=Checkpoint)
        )
    )
    protected = protected_uuids(session, [c.uuid for c in rows])
    for skipped in sorted(protected & set(explicit)):
        log.warning("experiment %s: checkpoint %s not deleted: it became protected", experiment.id, skipped)
    return [c for c in rows if c.uuid not in protected]


def mark_deleted(session: Session, checkpoints: Sequence[Checkpoint]) -> None:
    """After storage confirmed: DELETED, and no trial points at them any more."""
    now = utcnow()
    for checkpoint in checkpoints:
        checkpoint.state = "DELETED"
        checkpoint.deleted_at = now
    session.flush()
    repoint_latest(session, {c.trial_id for c in checkpoints})


def newest_completed(
    session: Session, trial_id: int, *, other_than: uuid.UUID | None = None
) -> uuid.UUID | None:
    query = select(Checkpoint.uuid).where(Checkpoint.trial_id == trial_id, Checkpoint.state == "COMPLETED")
    if other_than is not None:
        query = query.where(Checkpoint.uuid != other_than)
    return session.scalar(
        query.order_by(Checkpoint.steps_completed.desc(), Checkpoint.created_at.desc()).limit(1)
    )


def repoint_latest(session: Session, trial_ids: Collection[int]) -> None:
    """A trial's latest_checkpoint only ever names a COMPLETED checkpoint (or nothing)."""
    if not trial_ids:
        return
    stale = session.scalars(
        select(Trial)
        .outerjoin(Checkpoint, Checkpoint.uuid == Trial.latest_checkpoint)
        .where(
            Trial.id.in_(sorted(trial_ids)),
            Trial.latest_checkpoint.is_not(None),
            or_(Checkpoint.uuid.is_(None), Checkpoint.state != "COMPLETED"),
        )
        .order_by(Trial.id)
        .with_for_update(of=Trial)
    ).all()
    for trial in stale:
        trial.latest_checkpoint = newest_completed(session, trial.id)
    session.flush()
