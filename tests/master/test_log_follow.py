"""A followed log stream lasts while a run of the trial is queued, going or about to be queued.

CI once saw `logs?follow=true` end at once on a trial created a moment before: the scheduler had
not yet queued its first run, and "no live allocation" was read as "done".
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from stalwart_master.db.orm import Allocation, Experiment, Trial
from stalwart_master.services import trials as trials_service
from stalwart_master.services.states import ExperimentState

from support import wait_for

pytestmark = pytest.mark.integration
# A pool no agent serves: the trial's run stays PENDING for as long as the test needs.
CONFIG = (
    "entrypoint: python3 train.py\n"
    "searcher: {name: single, metric: loss}\n"
    "resources: {resource_pool: no-agents}\n"
)


def new_trial(admin: Any) -> tuple[int, int]:
    experiment = admin.post("/api/v1/experiments", json={"config": CONFIG}).json()
    trial = admin.get(f"/api/v1/experiments/{experiment['id']}/trials").json()[0]
    return experiment["id"], trial["id"]


def test_a_trial_without_a_live_run_still_has_one_ahead_until_it_or_its_experiment_stops(admin: Any) -> None:
    experiment_id, trial_id = new_trial(admin)

    def queued() -> bool:
        with admin.app_ref.state.sessions() as fresh:
            return fresh.scalar(select(Allocation.id).where(Allocation.trial_id == trial_id)) is not None

    # The app's scheduler queues the first run on its own pass; wait for it, or it could queue one
    # in the middle of this test (a loaded machine makes that window wide).
    wait_for(queued, 30, "the scheduler to queue the trial's first run")
    with admin.app_ref.state.sessions() as session:
        # The moments the scheduler has not acted on yet: just created, or between two runs.
        session.execute(
            update(Allocation)
            .where(Allocation.trial_id == trial_id)
            .values(state="TERMINATED", exit_reason="exited")
        )
        assert trials_service.has_run_ahead(session, trial_id)
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        experiment.state = ExperimentState.PAUSED
        session.flush()
        assert not trials_service.has_run_ahead(session, trial_id), "a paused trial has nothing coming"
        experiment.state = ExperimentState.ACTIVE
        trial = session.get(Trial, trial_id)
        assert trial is not None
        trial.state = "COMPLETED"
        session.flush()
        assert not trials_service.has_run_ahead(session, trial_id)
        session.rollback()


def test_follow_waits_for_a_pending_trial_and_ends_with_every_line_when_it_completes(admin: Any) -> None:
    experiment_id, trial_id = new_trial(admin)
    received: list[dict[str, Any]] = []
    ended = threading.Event()

    def follow() -> None:
        with admin.stream("GET", f"/api/v1/trials/{trial_id}/logs", params={"follow": True}) as stream:
            for raw in stream.iter_lines():
                received.append(json.loads(raw))
        ended.set()

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert not ended.wait(1.5), "the stream ended while the trial waited for its first run"
    sessions = admin.app_ref.state.sessions
    with sessions.begin() as session:
        allocation = session.scalars(
            select(Allocation).where(Allocation.trial_id == trial_id, Allocation.state == "PENDING")
        ).first()
        # Made here when the scheduler has not queued the run yet.
        if allocation is None:
            allocation = Allocation(
                trial_id=trial_id, run_id=1, resource_pool="no-agents", slots_needed=1, priority=42
            )
            allocation.state = "PENDING"
            session.add(allocation)
            session.flush()
        lines = [
            trials_service.LogLine(
                ts=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), rank=0, stream="stdout", message=f"line {i}"
            )
            for i in range(3)
        ]
        trials_service.append_logs(session, trial_id, allocation.id, lines, uuid.uuid4())
    with sessions.begin() as session:
        # The run ends: its lines were stored first, then the trial and experiment end with it.
        # The trial row first: the scheduler then cannot queue another run behind this update.
        session.execute(update(Trial).where(Trial.id == trial_id).values(state="COMPLETED"))
        session.execute(update(Allocation).where(Allocation.trial_id == trial_id).values(state="TERMINATED"))
        session.execute(
            update(Experiment).where(Experiment.id == experiment_id).values(state=ExperimentState.COMPLETED)
        )
    assert ended.wait(10), "the stream did not end after the trial completed"
    assert [line["message"] for line in received] == ["line 0", "line 1", "line 2"]
