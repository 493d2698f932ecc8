"""The master's side of fault tolerance on the real database: preemption deadlines, the reconnect
window after a master start, run outcomes and the runs history."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from registry_support import RunningTrial, start_trial
from sqlalchemy.orm import Session, sessionmaker

from stalwart_master.db.orm import Agent, Allocation, Trial, utcnow
from stalwart_master.scheduler.loop import schedule_once
from stalwart_master.services import allocations as allocations_service
from stalwart_master.services import trials as trials_service

pytestmark = pytest.mark.integration

CONFIG = "name: ft-{tag}\nentrypoint: python3 train.py\nsearcher: {{name: single, metric: loss}}\n{extra}"
WAIT = dt.timedelta(seconds=25)


def sessions_of(admin: Any) -> sessionmaker[Session]:
    return admin.app_ref.state.sessions  # type: ignore[no-any-return]


def running_trial(admin: Any, extra: str = "", *, activate: bool = True) -> tuple[int, RunningTrial]:
    """An experiment whose trial has a RUNNING, delivered run in a pool no agent serves.

    It is created paused, so the live scheduler never queues a run of its own for the trial.
    """
    text = CONFIG.format(tag=uuid.uuid4().hex[:8], extra=extra)
    experiment = admin.post("/api/v1/experiments", json={"config": text, "paused": True}).json()
    run = start_trial(sessions_of(admin), experiment["id"])
    with sessions_of(admin).begin() as session:
        allocation = session.get(Allocation, run.allocation_id)
        assert allocation is not None
        allocation.delivered = True
    if activate:
        assert admin.post(f"/api/v1/experiments/{experiment['id']}/activate").status_code == 200
    return experiment["id"], run


@pytest.fixture
def pass_session(admin: Any) -> Iterator[Session]:
    """A transaction that is always rolled back: rows made in it are invisible to the live scheduler."""
    session = sessions_of(admin)()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def one_pass(session: Session, **kwargs: Any) -> None:
    """Run ``schedule_once`` in ``session``, waiting out a pass of the app's own scheduler thread."""
    deadline = utcnow() + dt.timedelta(seconds=10)
    while not schedule_once(session, WAIT, **kwargs):
        assert utcnow() < deadline, "the scheduler lock never came free"


def test_pause_records_when_preemption_was_asked_and_the_run_is_killed_once_its_timeout_passed(
    admin: Any, pass_session: Session
) -> None:
    experiment_id, run = running_trial(admin, "preemption_timeout: 60\n")
    before = utcnow()
    assert admin.post(f"/api/v1/experiments/{experiment_id}/pause").json()["state"] == "PAUSED"
    allocation = pass_session.get(Allocation, run.allocation_id)
    assert allocation is not None and allocation.preempt_requested
    assert allocation.preempt_requested_at is not None and allocation.preempt_requested_at >= before

    # 59 s after the request: still its time to checkpoint. 61 s: killed.
    default = dt.timedelta(seconds=300)
    allocation.preempt_requested_at = utcnow() - dt.timedelta(seconds=59)
    assert allocations_service.kill_overdue_preemptions(pass_session, default) == 0
    assert not allocation.kill_requested
    allocation.preempt_requested_at = utcnow() - dt.timedelta(seconds=61)
    # A master that has just started gives the run its whole timeout again.
    assert allocations_service.kill_overdue_preemptions(pass_session, default, not_before=utcnow()) == 0
    assert allocations_service.kill_overdue_preemptions(pass_session, default) == 1
    assert allocation.kill_requested

    # Killed for ignoring preemption: not the code's fault, so the trial waits to resume (PAUSED
    # while its experiment is, as in Determined).
    allocations_service.finish_allocation(
        pass_session, allocation, -9, "killed by SIGKILL (killed on request)"
    )
    trial = pass_session.get(Trial, run.trial_id)
    assert trial is not None and (trial.state, trial.restarts) == ("PAUSED", 0)
    assert (allocation.state, allocation.exit_reason) == ("TERMINATED", "preemption timeout")


def test_the_cluster_default_timeout_applies_and_a_request_without_a_time_starts_its_clock(
    admin: Any, pass_session: Session
) -> None:
    _, run = running_trial(admin)
    allocation = pass_session.get(Allocation, run.allocation_id)
    assert allocation is not None
    allocation.preempt_requested = True  # as a path that does not record the time would
    default = dt.timedelta(seconds=5)
    assert allocations_service.kill_overdue_preemptions(pass_session, default) == 0
    assert allocation.preempt_requested_at is not None
    allocation.preempt_requested_at -= dt.timedelta(seconds=6)
    assert allocations_service.kill_overdue_preemptions(pass_session, default) == 1


def test_no_agent_is_declared_lost_within_a_reconnect_window_of_the_master_start(
    admin: Any, pass_session: Session
) -> None:
    silent = Agent(id=f"silent-{uuid.uuid4().hex[:8]}", resource_pool=f"ft-{uuid.uuid4().hex[:8]}")
    silent.last_seen_at = utcnow() - dt.timedelta(hours=1)  # its last poll was before the master died
    pass_session.add(silent)
    pass_session.flush()

    one_pass(pass_session, master_started_at=utcnow() - WAIT / 2)
    pass_session.refresh(silent)
    assert silent.connected, "declared lost although the master had only just started"
    one_pass(pass_session, master_started_at=utcnow() - WAIT * 2)
    pass_session.refresh(silent)
    assert not silent.connected, "a full window after the start it is lost"


def test_the_runs_history_lists_each_run_with_its_end(admin: Any) -> None:
    experiment_id, run = running_trial(admin, "max_restarts: 3\n", activate=False)
    assert admin.get(f"/api/v1/trials/{run.trial_id}/runs").json()[0]["state"] == "RUNNING"
    with sessions_of(admin).begin() as session:
        allocation = session.get(Allocation, run.allocation_id, with_for_update=True)
        assert allocation is not None
        allocations_service.finish_allocation(session, allocation, 2, "exited with code 2")
    (ended,) = admin.get(f"/api/v1/trials/{run.trial_id}/runs").json()
    assert (ended["run_id"], ended["state"], ended["exit_code"], ended["exit_reason"]) == (
        1,
        "TERMINATED",
        2,
        "exited",
    )
    assert ended["allocation_id"] == str(run.allocation_id) and ended["restored_checkpoint"] is None
    assert admin.get(f"/api/v1/trials/{run.trial_id}").json()["restarts"] == 1
    assert admin.get("/api/v1/trials/2000000000/runs").status_code == 404
    assert admin.post(f"/api/v1/experiments/{experiment_id}/kill").json()["state"] == "CANCELED"


def test_archiving_rolls_back_the_trials_steps_and_best_validation_to_the_live_rows(
    admin: Any, pass_session: Session
) -> None:
    _, run = running_trial(admin, activate=False)
    trial = pass_session.get(Trial, run.trial_id)
    assert trial is not None

    def report(run_id: int, group: str, steps: range | list[int], loss: float) -> int:
        reports = [trials_service.MetricReport(group, s, {"loss": loss}) for s in steps]
        return trials_service.ingest_metrics(pass_session, trial, run_id, uuid.uuid4(), reports)

    report(1, "training", range(1, 11), 1.0)
    report(1, "validation", [4], 0.5)
    report(1, "validation", [8], 0.01)
    assert (trial.steps_completed, trial.best_validation) == (10, 0.01)

    # Run 2 restored the checkpoint of step 5: run 1's rows after it leave the live view.
    assert trials_service.archive_metrics_after(pass_session, trial, run_id=2, steps=5) == 6
    assert (trial.steps_completed, trial.best_validation) == (5, 0.5)
    assert trials_service.archive_metrics_after(pass_session, trial, run_id=2, steps=5) == 0  # idempotent

    assert report(2, "training", range(4, 11), 2.0) == 5  # steps 4 and 5 keep run 1's live rows
    assert report(2, "validation", [8], float("nan")) == 1  # NaN is kept but never the best
    assert (trial.steps_completed, trial.best_validation) == (10, 0.5)
    live = trials_service.list_metrics(pass_session, trial.id)
    assert [(m.group, m.steps_completed, m.run_id) for m in live if m.group == "training"] == [
        ("training", s, 1 if s <= 5 else 2) for s in range(1, 11)
    ]
    assert len(trials_service.list_metrics(pass_session, trial.id, include_archived=True)) == len(live) + 6
