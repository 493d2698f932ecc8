"""What trials report: metrics (exactly once), progress, checkpoints and log lines; and queries."""

from __future__ import annotations

import datetime as dt
import logging
import math
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, array, insert
from sqlalchemy.orm import Session

from stalwart_master.db.orm import (
    Allocation,
    Checkpoint,
    Experiment,
    LogBatch,
    Metric,
    MetricBatch,
    Trial,
    TrialLog,
)
from stalwart_master.errors import Conflict, ErrorList, Forbidden, NotFound
from stalwart_master.services import gc as gc_service
from stalwart_master.services import metric_rollups
from stalwart_master.services import storage as storage_service
from stalwart_master.services.states import LIVE_ALLOCATION

log = logging.getLogger(__name__)

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_value(value: Any) -> Any:
    """JSONB cannot hold NaN or infinities; they are stored as the JSON spellings Python reads back."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def decode_value(value: Any) -> Any:
    return _NON_FINITE.get(value, value) if isinstance(value, str) else value


@dataclass(frozen=True)
class MetricReport:
    group: str
    steps_completed: int
    values: dict[str, Any]


def get_trial(session: Session, trial_id: int, *, for_update: bool = False) -> Trial:
    query = select(Trial).where(Trial.id == trial_id)
    if for_update:
        query = query.with_for_update()
    trial = session.scalar(query)
    if trial is None:
        raise NotFound(f"trial {trial_id} not found")
    return trial


def set_progress(session: Session, trial_id: int, progress: float) -> None:
    get_trial(session, trial_id, for_update=True).progress = progress


def set_searcher_metric(session: Session, trial_id: int, metric: float) -> None:
    get_trial(session, trial_id, for_update=True).searcher_metric = metric


def experiment_best_validation(session: Session, allocation: Allocation, experiment_id: int) -> float | None:
    """The best searcher metric any trial of the run's own experiment has reported so far.

    Determined's Trainer reads it to decide "best" checkpoints; a run may ask only about its own
    experiment (another experiment's results are not its business).
    """
    trial = get_trial(session, allocation.trial_id)
    if trial.experiment_id != experiment_id:
        raise Forbidden("this token belongs to a trial of another experiment")
    experiment = session.get(Experiment, experiment_id)
    assert experiment is not None
    _, smaller = _searcher_metric(experiment)
    best = (func.min if smaller else func.max)(Trial.best_validation)
    value = session.scalar(select(best).where(Trial.experiment_id == experiment_id))
    return None if value is None else float(value)


def list_trials(session: Session, experiment_id: int) -> list[Trial]:
    return list(session.scalars(select(Trial).where(Trial.experiment_id == experiment_id).order_by(Trial.id)))


def _searcher_metric(experiment: Experiment) -> tuple[str, bool]:
    searcher = experiment.config.get("searcher", {})
    return str(searcher.get("metric", "")), bool(searcher.get("smaller_is_better", True))


def ingest_metrics(
    session: Session, trial: Trial, run_id: int, batch_id: uuid.UUID, reports: list[MetricReport]
) -> int:
    """Store a batch once: a repeated batch id, or a (group, step) with a live row already, is skipped."""
    errors = ErrorList()
    for i, report in enumerate(reports):
        if not report.group or "." in report.group or len(report.group) > 64:
            errors.add(f"metrics.{i}.group", "must be 1-64 characters without '.'")
        if report.steps_completed < 0:
            errors.add(f"metrics.{i}.steps_completed", "must be at least 0")
        for key, value in report.values.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                errors.add(f"metrics.{i}.values.{key}", "must be a number")
            elif isinstance(value, int) and abs(value) > sys.float_info.max:
                # Charts and comparisons read values as float8; such an integer has no float.
                errors.add(f"metrics.{i}.values.{key}", "must be within the range of a 64-bit float")
    errors.raise_if_any(title="Invalid metrics")
    new_batch = session.execute(
        insert(MetricBatch)
        .values(batch_id=batch_id, trial_id=trial.id)
        .on_conflict_do_nothing()
        .returning(MetricBatch.batch_id)
    ).scalar()
    if new_batch is None or not reports:
        return 0
    rows = [
        {
            "trial_id": trial.id,
            "run_id": run_id,
            "group": r.group,
            "steps_completed": r.steps_completed,
            "values": {k: encode_value(float(v) if isinstance(v, float) else v) for k, v in r.values.items()},
        }
        for r in reports
    ]
    # One statement compiled once and sent as a multi-row insert: the hot path of ingestion. A step
    # that already has a live row keeps it (the partial unique index), so only new rows come back.
    stored = session.execute(
        insert(Metric)
        .on_conflict_do_nothing()
        .returning(Metric.group, Metric.steps_completed, Metric.values),
        rows,
    ).all()
    metric_rollups.after_ingest(session, trial.id, ((group, steps) for group, steps, _ in stored))
    experiment = session.get(Experiment, trial.experiment_id)
    assert experiment is not None
    metric_name, smaller = _searcher_metric(experiment)
    for group, steps, values in stored:
        trial.steps_completed = max(trial.steps_completed, steps)
        if group == "validation" and metric_name in values:
            value = decode_value(values[metric_name])
            if math.isfinite(value) and (
                trial.best_validation is None or (value < trial.best_validation) == smaller
            ):
                trial.best_validation = value
    return len(stored)


def start_run_from(
    session: Session, trial: Trial, allocation: Allocation, checkpoint_uuid: uuid.UUID | None
) -> None:
    """Record the checkpoint a run starts from and archive what earlier runs reported past it.

    Called when the run first asks for its info, and again if its restore falls back to an older
    checkpoint; once the run has saved a checkpoint of its own, where it started is settled.
    """
    own = select(Checkpoint.uuid).where(Checkpoint.allocation_id == allocation.id).limit(1)
    if session.scalar(own) is not None:
        return
    allocation.restored_checkpoint = checkpoint_uuid
    checkpoint = session.get(Checkpoint, checkpoint_uuid) if checkpoint_uuid else None
    # A warm-start checkpoint belongs to another trial: this trial's own history starts at 0.
    steps = checkpoint.steps_completed if checkpoint is not None and checkpoint.trial_id == trial.id else 0
    archive_metrics_after(session, trial, allocation.run_id, steps)


def archive_metrics_after(session: Session, trial: Trial, run_id: int, steps: int) -> int:
    """Rows of runs before ``run_id`` past ``steps`` become archived (never deleted); the trial's
    steps and best validation are recomputed from the live rows."""
    archived = session.execute(
        update(Metric)
        .where(
            Metric.trial_id == trial.id,
            Metric.run_id < run_id,
            Metric.steps_completed > steps,
            Metric.archived.is_(False),
        )
        .values(archived=True)
        .returning(Metric.group, Metric.steps_completed)
    ).all()
    if not archived:
        return 0
    metric_rollups.forget(session, trial.id, ((group, step) for group, step in archived))
    live = (Metric.trial_id == trial.id, Metric.archived.is_(False))
    top = session.scalar(select(func.max(Metric.steps_completed)).where(*live))
    trial.steps_completed = max(steps, int(top or 0))
    experiment = session.get(Experiment, trial.experiment_id)
    assert experiment is not None
    metric_name, smaller = _searcher_metric(experiment)
    value = Metric.values[metric_name]
    best = (func.min if smaller else func.max)(value.as_float())
    trial.best_validation = session.scalar(
        select(best).where(*live, Metric.group == "validation", func.jsonb_typeof(value) == "number")
    )
    log.info(
        "trial %s run %s starts at step %d: %d metric rows of earlier runs archived",
        trial.id,
        run_id,
        steps,
        len(archived),
    )
    return len(archived)


def list_metrics(
    session: Session,
    trial_id: int,
    group: str | None = None,
    limit: int = 10_000,
    *,
    include_archived: bool = False,
    metrics: Sequence[str] = (),
    start_batches: int | None = None,
    end_batches: int | None = None,
) -> list[Metric]:
    """Live rows in step order (one per group and step); archived ones too on request; with
    ``metrics``, only rows holding at least one of those names; steps within
    ``[start_batches, end_batches)`` when given (a reader pages through a long series this way)."""
    query = select(Metric).where(Metric.trial_id == trial_id)
    if start_batches is not None:
        query = query.where(Metric.steps_completed >= start_batches)
    if end_batches is not None:
        query = query.where(Metric.steps_completed < end_batches)
    if group:
        query = query.where(Metric.group == group)
    if not include_archived:
        query = query.where(Metric.archived.is_(False))
    if metrics:
        query = query.where(Metric.values.has_any(cast(array(list(metrics)), ARRAY(Text))))
    order = (Metric.steps_completed, Metric.run_id, Metric.group)
    return list(session.scalars(query.order_by(*order).limit(limit)))


def count_live_metrics(session: Session, trial_id: int, group: str | None = None) -> int:
    query = select(func.count()).where(Metric.trial_id == trial_id, Metric.archived.is_(False))
    if group:
        query = query.where(Metric.group == group)
    return int(session.scalar(query) or 0)


def last_step_by_run(session: Session, trial_id: int) -> dict[int, int]:
    """Each run's furthest reported step, archived rows included: what a restart rolled back."""
    query = (
        select(Metric.run_id, func.max(Metric.steps_completed))
        .where(Metric.trial_id == trial_id)
        .group_by(Metric.run_id)
    )
    return {int(run_id): int(step) for run_id, step in session.execute(query)}


def list_runs(session: Session, trial_id: int) -> list[Allocation]:
    """Every run (allocation) of the trial, first to last."""
    get_trial(session, trial_id)
    query = select(Allocation).where(Allocation.trial_id == trial_id).order_by(Allocation.run_id)
    return list(session.scalars(query))


def register_checkpoint(
    session: Session,
    trial: Trial,
    *,
    checkpoint_uuid: uuid.UUID,
    allocation_id: uuid.UUID | None,
    steps_completed: int,
    storage: dict[str, Any],
    manifest: dict[str, Any],
    metadata: dict[str, Any],
    parent_uuid: uuid.UUID | None,
) -> Checkpoint:
    """Called only after the harness committed the manifest, so a registered checkpoint is complete.

    ``storage`` is the trial's claim of where it wrote: it must be the storage the master resolved
    for the experiment (else 422 at ``storage``), and the row keeps the master's copy, without
    credentials, never the claim. Each registration also asks for a GC run: the trial's policy
    (save_trial_latest and the rest) holds while it trains, not only once the experiment has ended.
    """
    errors = ErrorList()
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        errors.add("manifest.files", "must list at least one file")
    else:
        for i, entry in enumerate(files):
            if not isinstance(entry, dict) or not {"path", "size"} <= set(entry):
                errors.add(f"manifest.files.{i}", "needs path and size")
            elif "chunks" not in entry and "sha256" not in entry:
                errors.add(f"manifest.files.{i}", "needs chunks (or the sha256 of the whole file)")
    if steps_completed < 0:
        errors.add("steps_completed", "must be at least 0")
    errors.raise_if_any(title="Invalid checkpoint")
    experiment = session.get(Experiment, trial.experiment_id)
    assert experiment is not None
    where = storage_service.registered_storage(experiment.config, storage)
    if session.get(Checkpoint, checkpoint_uuid) is not None:
        raise Conflict(f"checkpoint {checkpoint_uuid} is already registered")
    checkpoint = Checkpoint(
        uuid=checkpoint_uuid,
        trial_id=trial.id,
        allocation_id=allocation_id,
        steps_completed=steps_completed,
        state="COMPLETED",
        storage=where,
        manifest=manifest,
        user_metadata=metadata,
        size=int(manifest.get("size") or sum(int(f["size"]) for f in manifest["files"])),
        parent_uuid=parent_uuid,
    )
    session.add(checkpoint)
    latest = session.get(Checkpoint, trial.latest_checkpoint) if trial.latest_checkpoint else None
    if latest is None or latest.state != "COMPLETED" or steps_completed >= latest.steps_completed:
        trial.latest_checkpoint = checkpoint_uuid
    session.flush()
    gc_service.request_gc(session, trial.experiment_id, "checkpoint registered")
    return checkpoint


def get_checkpoint(session: Session, checkpoint_uuid: uuid.UUID) -> Checkpoint:
    checkpoint = session.get(Checkpoint, checkpoint_uuid)
    if checkpoint is None:
        raise NotFound(f"checkpoint {checkpoint_uuid} not found")
    return checkpoint


def list_checkpoints(session: Session, experiment_id: int) -> list[Checkpoint]:
    query = (
        select(Checkpoint)
        .join(Trial, Trial.id == Checkpoint.trial_id)
        .where(Trial.experiment_id == experiment_id)
        .order_by(Checkpoint.created_at)
    )
    return list(session.scalars(query))


@dataclass(frozen=True)
class LogLine:
    ts: dt.datetime
    rank: int
    stream: str
    message: str


def append_logs(
    session: Session,
    trial_id: int,
    allocation_id: uuid.UUID,
    lines: list[LogLine],
    batch_id: uuid.UUID | None = None,
) -> None:
    """Store a batch of lines in order; a batch id seen before is a retry and adds nothing."""
    if batch_id is not None:
        new_batch = session.execute(
            insert(LogBatch)
            .values(batch_id=batch_id, allocation_id=allocation_id)
            .on_conflict_do_nothing()
            .returning(LogBatch.batch_id)
        ).scalar()
        if new_batch is None:
            return
    if lines:
        session.execute(
            insert(TrialLog),
            [
                {
                    "trial_id": trial_id,
                    "allocation_id": allocation_id,
                    "rank": line.rank,
                    "stream": line.stream,
                    "ts": line.ts,
                    "message": line.message.replace("\x00", ""),
                }
                for line in lines
            ],
        )


def has_run_ahead(session: Session, trial_id: int) -> bool:
    """A run of the trial is queued or going, or the scheduler will queue one on its next pass.

    The last case covers a trial just created and one between a failed run and its restart, which
    have no live allocation for a moment yet are not done.
    """
    live = select(Allocation.id).where(Allocation.trial_id == trial_id, Allocation.state.in_(LIVE_ALLOCATION))
    if session.scalar(live.limit(1)) is not None:
        return True
    states = session.execute(
        select(Trial.state, Experiment.state)
        .join(Experiment, Experiment.id == Trial.experiment_id)
        .where(Trial.id == trial_id)
    ).one_or_none()
    return states is not None and states == ("ACTIVE", "ACTIVE")


# Log levels as Determined orders them. A line's level is the ``LEVEL:`` it starts with (the
# harness's LOG_FORMAT writes one); a line without one counts as INFO.
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DEFAULT_LEVEL = "INFO"


@dataclass(frozen=True)
class LogFilter:
    """Which log lines a reader wants: ranks, streams, a minimum level and a time window (None: any)."""

    ranks: tuple[int, ...] = ()
    streams: tuple[str, ...] = ()
    min_level: str | None = None
    before: dt.datetime | None = None  # lines written before this time (Determined's --timestamp-before)
    after: dt.datetime | None = None

    def where(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if self.before is not None:
            clauses.append(TrialLog.ts < self.before)
        if self.after is not None:
            clauses.append(TrialLog.ts > self.after)
        if self.ranks:
            clauses.append(TrialLog.rank.in_(self.ranks))
        if self.streams:
            clauses.append(TrialLog.stream.in_(self.streams))
        if self.min_level and self.min_level != LOG_LEVELS[0]:
            at = LOG_LEVELS.index(self.min_level)
            above, below = LOG_LEVELS[at:], LOG_LEVELS[:at]
            # Filtering in PostgreSQL (a regex on the line's start) keeps --head/--tail exact.
            if _DEFAULT_LEVEL in above:
                clauses.append(~TrialLog.message.regexp_match(_level_pattern(below)))
            else:
                clauses.append(TrialLog.message.regexp_match(_level_pattern(above)))
        return clauses


def _level_pattern(levels: tuple[str, ...]) -> str:
    return rf"^ ?({'|'.join(levels)}):"


def read_logs(
    session: Session,
    trial_id: int,
    *,
    after_id: int = 0,
    limit: int = 1000,
    flt: LogFilter | None = None,
) -> list[TrialLog]:
    query = select(TrialLog).where(TrialLog.trial_id == trial_id, TrialLog.id > after_id)
    if flt is not None:
        query = query.where(*flt.where())
    return list(session.scalars(query.order_by(TrialLog.id).limit(limit)))


def tail_start(session: Session, trial_id: int, tail: int, flt: LogFilter | None = None) -> int:
    """The log id after which the last ``tail`` lines (that pass ``flt``) begin."""
    ids = select(TrialLog.id).where(TrialLog.trial_id == trial_id)
    if flt is not None:
        ids = ids.where(*flt.where())
    last = ids.order_by(TrialLog.id.desc()).limit(tail)
    smallest = session.scalar(select(func.min(last.subquery().c.id)))
    return int(smallest) - 1 if smallest is not None else 0
