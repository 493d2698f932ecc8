"""``adaptive_asha`` on the real master: a validation report that fails a rung stops the trial.

The stop goes through the preemption contract: the next scheduler pass asks the run to checkpoint
and exit, the run acknowledges and exits 0, and the trial is COMPLETED (not resumed, no restart
used) while the searcher creates the next trial. Runs are stood in for as an agent would (a
RUNNING allocation and its token); no agent serves the pool, so nothing else runs them.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from stalwart_master.db.orm import Allocation, Trial
from stalwart_master.services import allocations as allocations_service

from support import start_trial_run, wait_for

pytestmark = pytest.mark.integration

CONFIG = """\
name: asha-stops
entrypoint: python3 train.py
hyperparameters: {{lr: {{type: double, minval: 0.001, maxval: 0.1}}}}
searcher:
  name: adaptive_asha
  metric: loss
  time_metric: batches
  max_time: 4
  max_trials: 5
  max_concurrent_trials: 4
  mode: aggressive
  divisor: 2
resources: {{resource_pool: {pool}}}
"""


def report(admin: Any, trial_id: int, token: str, run_id: int, steps: int, values: dict[str, float]) -> None:
    body = {
        "run_id": run_id,
        "batch_id": str(uuid.uuid4()),
        "metrics": [{"group": "validation", "steps_completed": steps, "values": values}],
    }
    response = admin.post(
        f"/api/v1/trials/{trial_id}/metrics", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 204, response.text


def test_a_trial_failing_a_rung_is_preempted_then_completed_and_replaced(
    admin: Any, database_url: str
) -> None:
    pool = f"asha-{uuid.uuid4().hex[:6]}"
    experiment = admin.post("/api/v1/experiments", json={"config": CONFIG.format(pool=pool)})
    assert experiment.status_code == 201, experiment.text
    experiment_id = experiment.json()["id"]
    trials = [t["id"] for t in admin.get(f"/api/v1/experiments/{experiment_id}/trials").json()]
    assert len(trials) == 4  # max_concurrent_trials of the one bracket
    runs = {t: start_trial_run(database_url, t) for t in trials}
    a, b, c, d = trials
    sessions = admin.app_ref.state.sessions

    def allocation(trial_id: int) -> Allocation:
        with sessions() as session:
            return session.scalars(
                select(Allocation).where(Allocation.id == uuid.UUID(runs[trial_id][0]))
            ).one()

    def trial(trial_id: int) -> dict[str, Any]:
        return admin.get(f"/api/v1/trials/{trial_id}").json()

    # Rung 0 is batches 1: alone, then the best of two, pass; third of three does not (keep 1 of 3).
    report(admin, a, runs[a][1], 1, 10, {"loss": 0.5, "batches": 1})
    report(admin, b, runs[b][1], 1, 10, {"loss": 0.4, "batches": 1})
    report(admin, d, runs[d][1], 1, 10, {"loss": 0.1})  # no time metric: nothing is decided
    report(admin, c, runs[c][1], 1, 10, {"loss": 0.9, "batches": 1})
    wait_for(lambda: allocation(c).preempt_requested, 15, "the scheduler to ask the stopped run to leave")
    assert not allocation(a).preempt_requested and not allocation(b).preempt_requested
    assert trial(c)["state"] == "ACTIVE"  # until its run has checkpointed and left

    # The run acknowledges, checkpoints and exits 0, as the harness does on preemption.
    with sessions.begin() as session:
        run = session.get(Allocation, uuid.UUID(runs[c][0]), with_for_update=True)
        assert run is not None
        allocations_service.acknowledge_preemption(run)
        allocations_service.finish_allocation(session, run, 0, "exited")
    stopped = trial(c)
    assert stopped["state"] == "COMPLETED" and stopped["restarts"] == 0
    assert "stopped by the searcher at batches 1" in stopped["end_reason"]
    # (A PENDING run the scheduler may have queued before the stand-in one ended the same way.)
    assert {r["exit_reason"] for r in admin.get(f"/api/v1/trials/{c}/runs").json()} == {"stopped by searcher"}
    # The closed trial's place goes to the fifth and last trial.
    wait_for(
        lambda: len(admin.get(f"/api/v1/experiments/{experiment_id}/trials").json()) == 5, 10, "a new trial"
    )

    # The top rung (batches 4) stops a trial too: it is done. A repeated report changes nothing.
    report(admin, a, runs[a][1], 1, 40, {"loss": 0.2, "batches": 4})
    report(admin, a, runs[a][1], 1, 40, {"loss": 0.2, "batches": 4})
    wait_for(lambda: allocation(a).preempt_requested, 15, "the top rung to stop trial a")
    assert trial(a)["end_reason"] == "trained to max_time (batches 4)"

    # A stop that finds no run (here: the run already ended) ends the trial at once.
    with sessions.begin() as session:
        run = session.get(Allocation, uuid.UUID(runs[b][0]), with_for_update=True)
        assert run is not None
        allocations_service.finish_allocation(session, run, None, "agent lost")
        late = session.get(Trial, b, with_for_update=True)
        assert late is not None and late.state == "ACTIVE"  # to be resumed, but first:
        assert allocations_service.on_validations(session, late, [(20, {"loss": 0.9, "batches": 2})])
    wait_for(lambda: trial(b)["state"] == "COMPLETED", 15, "the stopped trial without a run to end")
    assert trial(b)["restarts"] == 0
    admin.post(f"/api/v1/experiments/{experiment_id}/kill")
