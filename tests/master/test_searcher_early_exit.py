"""InvalidHP on the real master: the early-exit route, the trial's end and its replacement; preview.

Runs are stood in for as an agent would (a RUNNING allocation and its token); no agent serves the
pool, so nothing else runs them.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from stalwart_master.db.orm import Allocation, Experiment
from stalwart_master.services import allocations as allocations_service

from support import start_trial_run

pytestmark = pytest.mark.integration

CONFIG = """\
name: invalid-hp
entrypoint: python3 train.py
hyperparameters: {{lr: {{type: double, minval: 0.001, maxval: 0.1}}}}
searcher: {{name: random, metric: loss, max_trials: 2, max_concurrent_trials: 2}}
max_restarts: 3
resources: {{resource_pool: {pool}}}
"""


def early_exit(admin: Any, trial_id: int, token: str, body: dict[str, Any]) -> Any:
    return admin.post(
        f"/api/v1/trials/{trial_id}/early_exit", json=body, headers={"Authorization": f"Bearer {token}"}
    )


def run_id(admin: Any, allocation_id: str) -> int:
    with admin.app_ref.state.sessions() as session:
        run = session.get(Allocation, uuid.UUID(allocation_id))
        assert run is not None
        return run.run_id


def end_run(admin: Any, allocation_id: str, exit_code: int) -> None:
    with admin.app_ref.state.sessions.begin() as session:
        run = session.get(Allocation, uuid.UUID(allocation_id), with_for_update=True)
        assert run is not None
        allocations_service.finish_allocation(session, run, exit_code, "exited")


def test_invalid_hp_completes_the_trial_and_the_searcher_replaces_it(admin: Any, database_url: str) -> None:
    created = admin.post(
        "/api/v1/experiments", json={"config": CONFIG.format(pool=f"ihp-{uuid.uuid4().hex[:8]}")}
    )
    assert created.status_code == 201, created.text
    experiment_id = created.json()["id"]
    a, b = [t["id"] for t in admin.get(f"/api/v1/experiments/{experiment_id}/trials").json()]
    (run_a, token_a), (run_b, token_b) = start_trial_run(database_url, a), start_trial_run(database_url, b)

    # (The scheduler may have queued a run before the stand-in one: use the stand-in's run id.)
    ra, rb = run_id(admin, run_a), run_id(admin, run_b)
    # Only the run's own token, for its own trial and current run, and only Determined's reasons.
    assert early_exit(admin, b, token_a, {"reason": "INVALID_HP", "run_id": ra}).status_code == 403
    assert early_exit(admin, a, token_a, {"reason": "INVALID_HP", "run_id": ra + 1}).status_code == 403
    assert early_exit(admin, a, token_a, {"reason": "BORED", "run_id": ra}).status_code == 422
    as_user = admin.post(f"/api/v1/trials/{a}/early_exit", json={"reason": "INVALID_HP", "run_id": ra})
    assert as_user.status_code == 403, as_user.text  # a user's credential is not the run's
    assert early_exit(admin, a, token_a, {"reason": "INVALID_HP", "run_id": ra}).status_code == 204
    assert early_exit(admin, b, token_b, {"reason": "ERRORED", "run_id": rb}).status_code == 204

    # The run then exits non-zero (the harness re-raises): no retry, whatever max_restarts says.
    end_run(admin, run_a, 1)
    end_run(admin, run_b, 1)
    trial_a = admin.get(f"/api/v1/trials/{a}").json()
    assert trial_a["state"] == "COMPLETED" and trial_a["restarts"] == 0
    assert trial_a["end_reason"] == "trial exited early with reason: invalid hyperparameters"
    assert "invalid hyperparameters" in {
        r["exit_reason"] for r in admin.get(f"/api/v1/trials/{a}/runs").json()
    }
    trial_b = admin.get(f"/api/v1/trials/{b}").json()
    assert trial_b["state"] == "ERROR" and trial_b["restarts"] == 0

    # The invalid trial's place goes to a new one; the errored one is not replaced.
    trials = admin.get(f"/api/v1/experiments/{experiment_id}/trials").json()
    assert len(trials) == 3
    # The ended run's token no longer works at all.
    assert early_exit(admin, a, token_a, {"reason": "INVALID_HP", "run_id": ra}).status_code == 401
    admin.post(f"/api/v1/experiments/{experiment_id}/kill")


def experiments(admin: Any) -> int:
    with admin.app_ref.state.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Experiment)) or 0)


def test_preview_search_answers_what_would_run_and_refuses_a_bad_config(admin: Any) -> None:
    config = (
        "entrypoint: x\nreproducibility: {experiment_seed: 3}\n"
        "hyperparameters: {n: {type: int, minval: 1, maxval: 4, count: 4}}\n"
        "searcher: {name: grid, metric: loss}\n"
    )
    before = experiments(admin)
    answer = admin.post("/api/v1/experiments/preview", json={"config": config})
    assert answer.status_code == 200, answer.text
    plan = answer.json()
    assert plan["total_trials"] == 4 and [t["hparams"]["n"] for t in plan["trials"]] == [1, 2, 3, 4]
    assert experiments(admin) == before  # nothing was created
    bad = admin.post(
        "/api/v1/experiments/preview",
        json={"config": "entrypoint: x\nsearcher: {name: async_halving, metric: loss, max_trials: 2}\n"},
    )
    assert bad.status_code == 422, bad.text
    assert "num_rungs" in bad.text and "time_metric" in bad.text


def test_a_run_reads_its_own_experiments_best_validation_and_no_other(admin: Any, database_url: str) -> None:
    pool = f"best-{uuid.uuid4().hex[:8]}"  # a prefix: all-digit hex would be read as a number
    ids = []
    for _ in range(2):
        created = admin.post("/api/v1/experiments", json={"config": CONFIG.format(pool=pool)})
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    a, b = [t["id"] for t in admin.get(f"/api/v1/experiments/{ids[0]}/trials").json()]
    (run_a, token_a), (run_b, token_b) = start_trial_run(database_url, a), start_trial_run(database_url, b)

    def best(experiment_id: int, token: str) -> Any:
        return admin.get(
            f"/api/v1/experiments/{experiment_id}/searcher/best_searcher_validation_metric",
            headers={"Authorization": f"Bearer {token}"},
        )

    assert best(ids[0], token_a).json() == {"metric": None}  # nothing validated yet
    for trial, run, token, loss in ((a, run_a, token_a, 0.5), (b, run_b, token_b, 0.25)):
        body = {
            "run_id": run_id(admin, run),
            "batch_id": str(uuid.uuid4()),
            "metrics": [{"group": "validation", "steps_completed": 1, "values": {"loss": loss}}],
        }
        sent = admin.post(
            f"/api/v1/trials/{trial}/metrics", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert sent.status_code == 204, sent.text
    assert best(ids[0], token_a).json() == {"metric": 0.25}  # the other trial's, smaller is better
    assert best(ids[1], token_a).status_code == 403  # another experiment is not this run's business
    as_user = admin.get(f"/api/v1/experiments/{ids[0]}/searcher/best_searcher_validation_metric")
    assert as_user.status_code == 403  # a user's credential is not a run's
    for experiment_id in ids:
        admin.post(f"/api/v1/experiments/{experiment_id}/kill")
