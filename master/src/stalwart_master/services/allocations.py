"""Trial runs on slots: searcher-driven trial creation, scheduling and run outcomes.

What agents are told and what their reports mean lives in ``services/agent_runs.py``.

The state lives in PostgreSQL only, so a restarted master continues where it was. Each function
takes a session and never commits; the scheduler loop and the routes own the transactions.

One experiment's bad row never stops a scheduling pass for the others: each run is queued and
placed under its own SAVEPOINT, and an experiment whose stored config cannot be scheduled (a value
the database refuses, one that predates today's config rules) ends in ERROR, saying why.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any, TypeGuard

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from stalwart_master.db.orm import (
    Agent,
    Allocation,
    AllocationSlot,
    Experiment,
    Slot,
    Token,
    Trial,
    utcnow,
)
from stalwart_master.errors import Forbidden, NotFound
from stalwart_master.expconf import ExperimentConfig
from stalwart_master.expconf.common import INT32_MAX
from stalwart_master.expconf.model import Environment
from stalwart_master.scheduler import (
    DEFAULT_PRIORITY,
    AgentCapacity,
    Holder,
    Preemption,
    PreemptionPolicy,
    Request,
    Running,
    SlotRef,
    schedule,
)
from stalwart_master.searcher import Create, EarlyExit, Searcher, Stop, make_searcher
from stalwart_master.searcher.base import refuse_oversized_search
from stalwart_master.searcher.feed import validation_feed
from stalwart_master.services import gc as gc_service
from stalwart_master.services import lineage as lineage_service
from stalwart_master.services import outcomes
from stalwart_master.services import storage as storage_service
from stalwart_master.services import trials as trials_service
from stalwart_master.services.states import LIVE_ALLOCATION, STOPPING, TERMINAL, ExperimentState

log = logging.getLogger(__name__)

LIVE = LIVE_ALLOCATION
ALLOCATION_TOKEN_TTL_HOURS = 24 * 14
KILL_GRACE_SECONDS = 10
MAX_POOL_NAME = 128  # allocations.resource_pool is VARCHAR(128)
# What a bad stored row raises while its run is built or written: Python's complaints about a value
# and the database refusing one (out of range, too long, NUL). Never the database being away.
_BAD_ROW = (DataError, ValueError, TypeError, KeyError, AttributeError, OverflowError)


class _Unschedulable(Exception):
    """An experiment's stored config cannot become a run; the message says which value and why."""


@dataclass(frozen=True)
class _Wanted:
    resource_pool: str
    slots: int
    priority: int
    max_slots: int | None


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _wanted(config: dict[str, Any]) -> _Wanted:
    """What each run of an experiment asks for, read defensively from its stored config.

    The config was valid when it was submitted, but rows written by hand or under older rules
    reach the scheduler too; anything an allocation row or the planner cannot take is refused here.
    """
    if not isinstance(config, dict):
        raise _Unschedulable("the stored config is not a mapping")
    resources = config.get("resources") or {}
    if not isinstance(resources, dict):
        raise _Unschedulable(f"resources is {_shown(resources)}, not a mapping")
    pool = resources.get("resource_pool") or "default"
    slots = resources.get("slots_per_trial", 1)
    priority = resources.get("priority")
    max_slots = resources.get("max_slots")
    if not isinstance(pool, str) or len(pool) > MAX_POOL_NAME:
        raise _Unschedulable(f"resources.resource_pool is not a name of at most {MAX_POOL_NAME} characters")
    if not _is_int(slots) or not 0 <= slots <= INT32_MAX:
        raise _Unschedulable(
            f"resources.slots_per_trial is {_shown(slots)}, not an integer from 0 to {INT32_MAX}"
        )
    if priority is not None and (not _is_int(priority) or not 1 <= priority <= 99):
        raise _Unschedulable(f"resources.priority is {_shown(priority)}, not an integer from 1 to 99")
    if max_slots is not None and (not _is_int(max_slots) or max_slots < 1):
        raise _Unschedulable(f"resources.max_slots is {_shown(max_slots)}, not an integer of at least 1")
    return _Wanted(pool, slots, DEFAULT_PRIORITY if priority is None else priority, max_slots)


def _reason(exc: Exception) -> str:
    if isinstance(exc, DataError):
        # The driver's first line names the problem ("integer out of range"); the rest is SQL.
        return f"the database refused a value: {str(exc.orig).splitlines()[0] if exc.orig else exc}"
    return str(exc) or type(exc).__name__


def _fail_unschedulable(session: Session, experiment: Experiment, trial: Trial, reason: str) -> None:
    """The experiment cannot run as stored: ``trial`` ends in ERROR with ``reason``; an active or
    paused experiment stops (its other runs are asked to leave) and ends in ERROR once none is left."""
    log.error(
        "experiment %s trial %s cannot be scheduled, ending the experiment in ERROR: %s",
        experiment.id,
        trial.id,
        reason,
    )
    trial.state = "ERROR"
    trial.end_reason = f"cannot be scheduled: {reason}"
    trial.ended_at = utcnow()
    if experiment.state in (ExperimentState.ACTIVE, ExperimentState.PAUSED):
        experiment.state = ExperimentState.STOPPING_ERROR
        stop_experiment_runs(session, experiment, kill=False)
    session.flush()
    settle_experiment(session, experiment)


def _config(experiment: Experiment) -> ExperimentConfig:
    return ExperimentConfig.model_validate(experiment.config)


def _searcher(experiment: Experiment) -> Searcher:
    config = _config(experiment)
    if experiment.searcher_state is None:
        return make_searcher(config)
    return Searcher.restore(config, experiment.searcher_state)


def _create_trials(
    session: Session, experiment: Experiment, ops: list[Any], warm_start: uuid.UUID | None
) -> None:
    for op in ops:
        if isinstance(op, Create):
            session.add(
                Trial(
                    experiment_id=experiment.id,
                    request_id=op.request_id,
                    hparams=op.hparams,
                    seed=op.trial_seed,
                    # A paused experiment's trials are PAUSED (Determined); activate resumes them.
                    state="PAUSED" if experiment.state == ExperimentState.PAUSED else "ACTIVE",
                    warm_start_checkpoint=warm_start,
                )
            )


def start_searcher(session: Session, experiment: Experiment, *, max_trials: int = 10_000) -> None:
    """At creation: the searcher's first trials are recorded at once (they wait for slots).

    A warm-start source (``searcher.source_*``) is resolved here, once: an unusable one refuses
    the experiment (422 naming the field), and so does a search of more than ``max_trials`` trials.
    """
    warm_start = lineage_service.resolve_warm_start(session, experiment.config)
    searcher = make_searcher(_config(experiment))
    refuse_oversized_search(searcher.name, searcher.total_trials, max_trials)
    _create_trials(session, experiment, searcher.initial_operations(), warm_start)
    experiment.searcher_state = searcher.state()
    session.flush()


def live_allocations(session: Session, experiment_id: int) -> list[Allocation]:
    query = (
        select(Allocation)
        .join(Trial, Trial.id == Allocation.trial_id)
        .where(Trial.experiment_id == experiment_id, Allocation.state.in_(LIVE))
    )
    return list(session.scalars(query))


def stop_experiment_runs(session: Session, experiment: Experiment, *, kill: bool) -> None:
    """Pause/cancel ask running trials to checkpoint and exit; kill stops them now."""
    for allocation in live_allocations(session, experiment.id):
        if kill and handed_over(allocation):
            allocation.kill_requested = True
        else:
            ask_to_leave(session, allocation, not_started=outcomes.NOT_STARTED)


def handed_over(allocation: Allocation) -> bool:
    """An agent has (or may have) started this run; before that nothing runs anywhere."""
    return allocation.state == "RUNNING" or (allocation.state == "ASSIGNED" and allocation.delivered)


def ask_to_leave(session: Session, allocation: Allocation, *, not_started: str) -> bool:
    """Ask a run to checkpoint and exit; one never handed to an agent simply ends here, giving
    its slots back, with reason ``not_started``. True when a run still has to leave."""
    if not handed_over(allocation):
        _terminate(session, allocation, exit_code=None, reason=not_started)
        return False
    request_preemption(allocation)
    return True


def allocation_slots(session: Session, allocation_id: uuid.UUID) -> list[Slot]:
    """The slots an allocation holds, by index: the order its devices are handed to the run."""
    return list(
        session.scalars(
            select(Slot)
            .join(AllocationSlot, AllocationSlot.slot_id == Slot.id)
            .where(AllocationSlot.allocation_id == allocation_id)
            .order_by(Slot.index)
        )
    )


def request_preemption(allocation: Allocation) -> None:
    """Ask a run to checkpoint and exit 0; its preemption_timeout runs from the first request."""
    allocation.preempt_requested = True
    if allocation.preempt_requested_at is None:
        allocation.preempt_requested_at = utcnow()


def _release(session: Session, allocation: Allocation) -> None:
    session.execute(
        update(AllocationSlot).where(AllocationSlot.allocation_id == allocation.id).values(released=True)
    )
    session.execute(
        update(Token)
        .where(Token.allocation_id == allocation.id, Token.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def _terminate(session: Session, allocation: Allocation, *, exit_code: int | None, reason: str) -> None:
    allocation.state = "TERMINATED"
    allocation.exit_code = exit_code
    allocation.exit_reason = reason
    allocation.ended_at = utcnow()
    _release(session, allocation)


def finish_allocation(session: Session, allocation: Allocation, exit_code: int | None, reason: str) -> None:
    """A run ended: free its slots, then decide its trial's fate and feed the searcher.

    ``reason`` is what the agent said (or ``outcomes.AGENT_LOST`` from the master); the run's
    ``exit_reason`` becomes the master's verdict on it (``outcomes``).
    """
    if allocation.state == "TERMINATED":
        return
    trial = session.scalar(select(Trial).where(Trial.id == allocation.trial_id).with_for_update())
    assert trial is not None
    experiment = session.scalar(
        select(Experiment).where(Experiment.id == trial.experiment_id).with_for_update()
    )
    assert experiment is not None
    agent = session.get(Agent, allocation.agent_id) if allocation.agent_id else None
    max_restarts = _max_restarts(experiment.config)
    outcome = outcomes.decide(
        outcomes.RunEnd(
            experiment_state=ExperimentState(experiment.state),
            exit_code=exit_code,
            agent_lost=reason == outcomes.AGENT_LOST,
            agent_draining=bool(agent and agent.draining),
            kill_requested=allocation.kill_requested,
            preempt_requested=allocation.preempt_requested,
            preempt_acked=allocation.preempt_acked,
            searcher_stopped=trial.stop_requested,
            early_exit=allocation.early_exit,
            restarts=trial.restarts,
            max_restarts=max_restarts,
        )
    )
    _terminate(session, allocation, exit_code=exit_code, reason=outcome.exit_reason)
    if outcome.counts_restart:
        trial.restarts += 1
    if outcome.trial_state == "ERROR":
        trial.end_reason = (
            f"run {allocation.run_id} failed ({reason}); {trial.restarts} failed runs "
            f"are more than max_restarts ({max_restarts})"
        )
    elif outcome.exit_reason in outcomes.EARLY_EXIT_REASONS.values():
        # Determined's wording, so a migrated user recognises it.
        trial.end_reason = f"trial exited early with reason: {outcome.exit_reason}"
    trial.state = outcome.trial_state
    if trial.state == "ACTIVE" and experiment.state == ExperimentState.PAUSED:
        trial.state = "PAUSED"  # resumed on activate
    log.info(
        "trial %s run %s (allocation %s) ended with %s (%s: %s): trial %s%s",
        trial.id,
        allocation.run_id,
        allocation.id,
        exit_code,
        outcome.exit_reason,
        reason,
        trial.state,
        f", failed runs {trial.restarts}/{max_restarts + 1}" if outcome.counts_restart else "",
    )
    if outcome.closes_trial:
        searcher = _searcher(experiment)
        early = allocation.early_exit if outcome.exit_reason in outcomes.EARLY_EXIT_REASONS.values() else None
        _close_trial(session, experiment, trial, searcher, early_exit=early)
        experiment.searcher_state = searcher.state()
    session.flush()
    settle_experiment(session, experiment)


def record_early_exit(
    session: Session, allocation: Allocation, trial_id: int, run_id: int, reason: str
) -> None:
    """The trial's code says it ends early (``EarlyExit``); its trial ends when this run does.

    Only the run's own allocation token may say so, for its own trial and its current run: a run
    that has ended, or a stale run id, is refused rather than applied to a later run.
    """
    if allocation.trial_id != trial_id:
        raise Forbidden("this token belongs to another trial")
    locked = session.scalar(select(Allocation).where(Allocation.id == allocation.id).with_for_update())
    assert locked is not None
    if locked.run_id != run_id:
        raise Forbidden(f"run {run_id} is not this token's run ({locked.run_id})")
    if locked.state not in LIVE:
        raise Forbidden(f"run {run_id} has already ended")
    locked.early_exit = EarlyExit(reason).value
    log.info("trial %s run %s reported an early exit: %s", trial_id, run_id, reason)


def _max_restarts(config: dict[str, Any]) -> int:
    # A stored value the config rules would refuse counts as no retries rather than failing the pass.
    value = config.get("max_restarts", 5)
    return value if _is_int(value) and value >= 0 else 0


def _close_trial(
    session: Session,
    experiment: Experiment,
    trial: Trial,
    searcher: Searcher,
    *,
    early_exit: str | None = None,
) -> None:
    """The trial ended for good: its checkpoints may be collected and the searcher may go on.

    ``early_exit``: the trial's code ended it (the searcher may replace it). The caller stores
    ``searcher.state()`` once it is done with the searcher.
    """
    trial.ended_at = utcnow()
    gc_service.request_gc(session, experiment.id, f"trial {trial.id} ended {trial.state}")
    if early_exit is not None:
        ops = searcher.on_trial_exited_early(trial.request_id, early_exit)
    else:
        ops = searcher.on_trial_closed(trial.request_id)
    _create_trials(session, experiment, ops, lineage_service.warm_start_of(session, experiment))


def close_trial(session: Session, experiment: Experiment, trial: Trial) -> None:
    """End a trial that has no run left (its state already set) and store the searcher's answer."""
    searcher = _searcher(experiment)
    _close_trial(session, experiment, trial, searcher)
    experiment.searcher_state = searcher.state()


def on_validations(session: Session, trial: Trial, reports: list[tuple[int, dict[str, Any]]]) -> bool:
    """Feed a trial's validation reports, ``(steps, values)``, to a searcher that uses them.

    The ASHA searchers and ``bayesian`` act on them (see ``validation_feed``). A ``Stop`` is
    recorded on the trial, and the next
    scheduler pass asks its run to checkpoint and exit (``apply_searcher_stops``); this path only
    locks the trial and then its experiment, as a run's end does. Call with the trial row locked.
    True when the trial was stopped.
    """
    experiment = session.get(Experiment, trial.experiment_id)
    assert experiment is not None
    feed = validation_feed(experiment.config.get("searcher") or {})
    if feed is None or trial.stop_requested or trial.state not in ("ACTIVE", "PAUSED"):
        return False
    metric, time_metric = feed.metric, feed.time_metric
    timed: list[tuple[float, float | None]] = [
        (float(values[metric]), float(values[time_metric]) if time_metric is not None else None)
        for _, values in sorted(reports, key=lambda r: r[0])
        if _number(values.get(metric)) and (time_metric is None or _number(values.get(time_metric)))
    ]
    if not timed:
        return False
    # Fresh under the lock: another trial's report may have moved the searcher on meanwhile.
    session.scalar(
        select(Experiment)
        .where(Experiment.id == experiment.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if ExperimentState(experiment.state) in TERMINAL:
        return False
    searcher = _searcher(experiment)
    for value, time in timed:
        if any(isinstance(op, Stop) for op in searcher.on_validation(trial.request_id, value, time)):
            trial.stop_requested = True
            assert time is not None and feed.max_time is not None  # only a timed report stops
            done = time >= feed.max_time
            trial.end_reason = (
                f"trained to max_time ({time_metric} {time:g})"
                if done
                else f"stopped by the searcher at {time_metric} {time:g}"
            )
            log.info("trial %s stopped by the searcher at %s %g", trial.id, time_metric, time)
            break
    experiment.searcher_state = searcher.state()
    return trial.stop_requested


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def apply_searcher_stops(session: Session) -> None:
    """Trials the searcher stopped: ask their runs to checkpoint and exit, or end them now.

    Rows someone else holds are skipped (SKIP LOCKED) and picked up by the next pass, so this
    never waits on, or deadlocks with, a run's end or a metrics report.
    """
    stopped = session.scalars(
        select(Trial).where(Trial.stop_requested, Trial.state == "ACTIVE").with_for_update(skip_locked=True)
    ).all()
    for trial in stopped:
        live = select(Allocation).where(Allocation.trial_id == trial.id, Allocation.state.in_(LIVE))
        allocations = session.scalars(live.with_for_update(skip_locked=True)).all()
        if len(allocations) < (session.scalar(select(func.count()).select_from(live.subquery())) or 0):
            continue  # one is being changed right now (e.g. its run is ending): the next pass
        leaving = [ask_to_leave(session, a, not_started=outcomes.STOPPED_BY_SEARCHER) for a in allocations]
        if any(leaving):
            continue
        experiment = session.scalar(
            select(Experiment)
            .where(Experiment.id == trial.experiment_id)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
        if experiment is None:
            continue
        # Nothing runs (a report that came after its run, or a run not started): it ends now.
        try:
            with session.begin_nested():
                trial.state = "COMPLETED"
                searcher = _searcher(experiment)
                _close_trial(session, experiment, trial, searcher)
                experiment.searcher_state = searcher.state()
        except _BAD_ROW as exc:
            _fail_unschedulable(session, experiment, trial, _reason(exc))
            continue
        settle_experiment(session, experiment)


def settle_experiment(session: Session, experiment: Experiment) -> None:
    """End an experiment whose searcher is done, or whose stop has no run left to wait for."""
    state = ExperimentState(experiment.state)
    if state in TERMINAL or state in (ExperimentState.DELETING, ExperimentState.DELETE_FAILED):
        return
    if live_allocations(session, experiment.id):
        return
    trials = session.scalars(select(Trial).where(Trial.experiment_id == experiment.id)).all()
    if state in STOPPING:
        for trial in trials:
            if trial.state not in TERMINAL:
                trial.state, trial.ended_at = "CANCELED", utcnow()
        experiment.state = {
            ExperimentState.STOPPING_CANCELED: ExperimentState.CANCELED,
            ExperimentState.STOPPING_KILLED: ExperimentState.CANCELED,
            ExperimentState.STOPPING_COMPLETED: ExperimentState.COMPLETED,
            ExperimentState.STOPPING_ERROR: ExperimentState.ERROR,
        }[state]
        experiment.ended_at = utcnow()
        gc_service.request_gc(session, experiment.id, f"experiment ended {experiment.state}")
        return
    shut_down = experiment.searcher_state is not None and _searcher(experiment).is_shut_down
    if shut_down and all(t.state in TERMINAL for t in trials):
        experiment.state = (
            ExperimentState.COMPLETED
            if any(t.state == "COMPLETED" for t in trials)
            else ExperimentState.ERROR
        )
        experiment.ended_at = utcnow()
        gc_service.request_gc(session, experiment.id, f"experiment ended {experiment.state}")
        log.info("experiment %s %s", experiment.id, experiment.state)


def request_allocations(session: Session) -> int:
    """Every active trial of an active experiment without a live run gets a PENDING allocation."""
    live = select(Allocation.trial_id).where(Allocation.state.in_(LIVE))
    query = (
        select(Trial, Experiment)
        .join(Experiment, Experiment.id == Trial.experiment_id)
        .where(
            Experiment.state == ExperimentState.ACTIVE,
            Trial.state == "ACTIVE",
            Trial.stop_requested.is_(False),
            Trial.id.not_in(live),
        )
        # Locking the experiment too means a concurrent pause/cancel either waits for this pass (and
        # then sees the new PENDING run) or is already done (and the row no longer matches).
        .with_for_update(of=[Trial, Experiment], skip_locked=True)
    )
    count = 0
    for trial, experiment in session.execute(query).all():
        if experiment.state != ExperimentState.ACTIVE:
            continue  # another of its trials could not be scheduled a moment ago
        try:
            wanted = _wanted(experiment.config)
            with session.begin_nested():
                trial.run_id += 1
                session.add(
                    Allocation(
                        trial_id=trial.id,
                        run_id=trial.run_id,
                        resource_pool=wanted.resource_pool,
                        slots_needed=wanted.slots,
                        priority=wanted.priority,
                        state="PENDING",
                    )
                )
        except (_Unschedulable, *_BAD_ROW) as exc:
            _fail_unschedulable(session, experiment, trial, _reason(exc))
            continue
        count += 1
    session.flush()
    return count


def assign_pending(session: Session, preemption: PreemptionPolicy | None = None) -> int:
    """Place PENDING allocations on free slots; the unique index refuses any double booking.

    In pools where ``preemption`` allows it, lower-priority runs are asked to make room.
    """
    pending_rows = session.execute(
        select(Allocation, Experiment)
        .join(Trial, Trial.id == Allocation.trial_id)
        .join(Experiment, Experiment.id == Trial.experiment_id)
        .where(Allocation.state == "PENDING", Experiment.state == ExperimentState.ACTIVE)
        .with_for_update(of=[Allocation, Experiment], skip_locked=True)
    ).all()
    if not pending_rows:
        return 0
    held = set(session.scalars(select(AllocationSlot.slot_id).where(AllocationSlot.released.is_(False))))
    agents = session.scalars(select(Agent).where(Agent.connected.is_(True))).all()
    free: dict[str, list[SlotRef]] = {}
    for slot in session.scalars(select(Slot).where(Slot.present.is_(True)).order_by(Slot.index)):
        if slot.id not in held:
            free.setdefault(slot.agent_id, []).append(
                SlotRef(slot_id=slot.id, index=slot.index, uuid=slot.uuid)
            )
    capacities = [
        AgentCapacity(
            agent_id=a.id,
            resource_pool=a.resource_pool,
            enabled=a.enabled,
            draining=a.draining,
            free_slots=free.get(a.id, []),
        )
        for a in agents
    ]
    live = session.execute(
        select(
            Allocation.id,
            Trial.experiment_id,
            Allocation.agent_id,
            Allocation.slots_needed,
            Allocation.priority,
            func.coalesce(Allocation.started_at, Allocation.assigned_at, Allocation.created_at),
            Allocation.preempt_requested,
        )
        .join(Trial, Trial.id == Allocation.trial_id)
        .where(Allocation.state.in_(("ASSIGNED", "RUNNING")))
    ).all()
    running = [Running(experiment_id=row[1], slots=row[3]) for row in live]
    holders = [
        Holder(allocation_id, agent_id, slots, priority, since, preempting)
        for allocation_id, _, agent_id, slots, priority, since, preempting in live
        if agent_id is not None
    ]
    policy = preemption or PreemptionPolicy()
    preemptive = {a.resource_pool for a in agents if policy.preemptive(a.resource_pool)}
    valid: list[tuple[Allocation, Experiment, _Wanted]] = []
    for allocation, experiment in pending_rows:
        if experiment.state != ExperimentState.ACTIVE:
            continue  # another of its runs could not be scheduled a moment ago
        try:
            wanted = _wanted(experiment.config)
            if not 0 <= allocation.slots_needed <= INT32_MAX:
                raise _Unschedulable(f"allocation {allocation.id} needs {allocation.slots_needed} slots")
        except _Unschedulable as exc:
            _fail_pending(session, allocation, experiment, str(exc))
            continue
        valid.append((allocation, experiment, wanted))
    # A failed experiment's other runs were ended meanwhile; they must not be placed.
    by_id = {a.id: (a, e) for a, e, _ in valid if a.state == "PENDING" and e.state == ExperimentState.ACTIVE}
    requests = [
        Request(
            allocation_id=allocation.id,
            trial_id=allocation.trial_id,
            experiment_id=experiment.id,
            resource_pool=allocation.resource_pool,
            slots_needed=allocation.slots_needed,
            priority=allocation.priority,
            submitted_at=allocation.created_at,
            max_slots=wanted.max_slots,
        )
        for allocation, experiment, wanted in valid
        if allocation.id in by_id
    ]
    result = schedule(requests, capacities, running, holders, preemptive)
    _preempt_for_priority(session, result.preemptions)
    placed = 0
    for assignment in result.assignments:
        allocation, experiment = by_id[assignment.allocation_id]
        try:
            _place(session, allocation, assignment.agent_id, [ref.slot_id for ref in assignment.slots])
        except IntegrityError:
            # The unique index on held slots refused: another planner took one. Next pass.
            log.warning(
                "allocation %s (trial %s) lost its slots to a race", allocation.id, allocation.trial_id
            )
            continue
        except _BAD_ROW as exc:
            _fail_pending(session, allocation, experiment, _reason(exc))
            continue
        placed += 1
    session.flush()
    return placed


def _place(session: Session, allocation: Allocation, agent_id: str, slot_ids: list[int]) -> None:
    with session.begin_nested():
        allocation.agent_id = agent_id
        allocation.state = "ASSIGNED"
        allocation.assigned_at = utcnow()
        for slot_id in slot_ids:
            session.add(AllocationSlot(allocation_id=allocation.id, slot_id=slot_id))
    log.info(
        "allocation %s (trial %s) assigned to agent %s, %d slots",
        allocation.id,
        allocation.trial_id,
        agent_id,
        len(slot_ids),
    )


def _fail_pending(session: Session, allocation: Allocation, experiment: Experiment, reason: str) -> None:
    _terminate(session, allocation, exit_code=None, reason=outcomes.NOT_STARTED)
    trial = session.get(Trial, allocation.trial_id)
    assert trial is not None
    _fail_unschedulable(session, experiment, trial, reason)


def _preempt_for_priority(session: Session, preemptions: list[Preemption]) -> None:
    wanted = {p.allocation_id: p for p in preemptions}
    if not wanted:
        return
    # A run whose row is busy (its end being reported) is skipped; the next pass looks again.
    for victim in session.scalars(
        select(Allocation).where(Allocation.id.in_(wanted)).with_for_update(skip_locked=True)
    ):
        if victim.state in ("ASSIGNED", "RUNNING") and not victim.preempt_requested:
            request_preemption(victim)
            log.info(
                "allocation %s (trial %s, priority %s) preempted on agent %s for allocation %s",
                victim.id,
                victim.trial_id,
                victim.priority,
                victim.agent_id,
                wanted[victim.id].for_allocation_id,
            )
    session.flush()


def kill_overdue_preemptions(
    session: Session, default_timeout: dt.timedelta, not_before: dt.datetime | None = None
) -> int:
    """Kill runs still alive ``preemption_timeout`` after they were asked to stop; they resume later.

    ``not_before`` (the master's start) restarts every clock: a run could not hear the request
    while the master was down.
    """
    now = utcnow()
    rows = session.execute(
        select(Allocation, Experiment.config)
        .join(Trial, Trial.id == Allocation.trial_id)
        .join(Experiment, Experiment.id == Trial.experiment_id)
        .where(
            Allocation.preempt_requested.is_(True),
            Allocation.kill_requested.is_(False),
            Allocation.state.in_(("ASSIGNED", "RUNNING")),
        )
        .with_for_update(of=Allocation, skip_locked=True)
    ).all()
    killed = 0
    for allocation, config in rows:
        if allocation.preempt_requested_at is None:  # asked by a path that kept no time: from now
            allocation.preempt_requested_at = now
        since = max(allocation.preempt_requested_at, not_before or allocation.preempt_requested_at)
        timeout = _preemption_timeout(config, default_timeout)
        if now - since >= timeout:
            allocation.kill_requested = True
            killed += 1
            log.warning(
                "allocation %s (trial %s) still running %s after preemption was requested: killing it",
                allocation.id,
                allocation.trial_id,
                timeout,
            )
    session.flush()
    return killed


def _preemption_timeout(config: dict[str, Any], default: dt.timedelta) -> dt.timedelta:
    # A stored value the config rules would refuse (timedelta cannot even hold some) means the default.
    seconds = config.get("preemption_timeout")
    if _is_int(seconds) and 0 < seconds <= INT32_MAX:
        return dt.timedelta(seconds=seconds)
    return default


def settle_stopping(session: Session) -> None:
    for experiment in session.scalars(
        select(Experiment).where(Experiment.state.in_([s.value for s in STOPPING]))
    ):
        settle_experiment(session, experiment)


def allocation_for_token(session: Session, token: Token) -> Allocation:
    if token.kind != "allocation" or token.allocation_id is None:
        raise Forbidden("this route is for a trial's allocation token")
    allocation = session.get(Allocation, token.allocation_id)
    if allocation is None:
        raise Forbidden("the allocation of this token is gone")
    if allocation.state == "TERMINATED":  # the token dies with its run
        raise Forbidden(f"allocation {allocation.id} has ended; its token is no longer valid")
    return allocation


def get_allocation(session: Session, allocation_id: uuid.UUID, *, for_update: bool = False) -> Allocation:
    allocation = session.get(Allocation, allocation_id, with_for_update=for_update)
    if allocation is None:
        raise NotFound(f"allocation {allocation_id} not found")
    return allocation


def preemption_requested(session: Session, allocation_id: uuid.UUID) -> bool:
    """A run that is gone counts as preempted too, so its harness stops polling."""
    allocation = session.get(Allocation, allocation_id)
    return bool(allocation and (allocation.preempt_requested or allocation.state == "TERMINATED"))


def acknowledge_preemption(allocation: Allocation) -> None:
    """After this, the run's exit 0 means "paused", not "finished"."""
    allocation.preempt_acked = True


def mark_running(session: Session, allocation: Allocation) -> None:
    if allocation.state == "ASSIGNED":
        allocation.state = "RUNNING"
        allocation.started_at = utcnow()


def trial_info(session: Session, allocation: Allocation) -> dict[str, Any]:
    """What the trial runner needs to start; serving it also settles where the run starts from."""
    trial = session.get(Trial, allocation.trial_id, with_for_update=True)
    assert trial is not None
    experiment = session.get(Experiment, trial.experiment_id)
    assert experiment is not None
    slots = allocation_slots(session, allocation.id)
    start = trial.latest_checkpoint or trial.warm_start_checkpoint
    trials_service.start_run_from(session, trial, allocation, start)
    device = "cuda" if any(s.type == "cuda" for s in slots) else "cpu"
    return {
        "allocation_id": str(allocation.id),
        "trial_id": trial.id,
        "experiment_id": experiment.id,
        "run_id": allocation.run_id,
        "trial_seed": trial.seed,
        "hparams": trial.hparams,
        "config": experiment.config,
        # Until the trial has a checkpoint of its own it starts from its warm-start one, which the
        # harness then records as the parent of what it saves: the lineage link across experiments.
        "latest_checkpoint": str(start) if start else None,
        "warm_start_checkpoint": str(trial.warm_start_checkpoint) if trial.warm_start_checkpoint else None,
        "steps_completed": trial.steps_completed,
        "context_sha256": experiment.context_sha256,
        "entrypoint": experiment.config.get("entrypoint"),
        "slot_uuids": [s.uuid for s in slots],
        # Resolved here (a named storage with its credentials): what its checkpoints must name.
        "checkpoint_storage": storage_service.experiment_storage(experiment.config),
        "searcher": {"max_length": (experiment.config.get("searcher") or {}).get("max_length")},
        # Determined's environment.environment_variables, picked for the kind of slots this run holds.
        "environment_variables": _environment_variables(experiment.config, device),
    }


def _environment_variables(config: dict[str, Any], device: str) -> dict[str, str]:
    try:
        return Environment.model_validate(config.get("environment") or {}).variables_for(device)
    except ValidationError:
        # A stored config today's rules refuse (written by an older master): run without them
        # rather than fail the run; the config rules already named the field at submission.
        log.warning("experiment config's environment is not valid today; no environment_variables applied")
        return {}
