"""Metrics from a trial: exactly once per batch and per (group, steps, run); NaN and infinities kept."""

from __future__ import annotations

import json
import math
import uuid

import pytest
from sqlalchemy import select, update

from stalwart_master.db.orm import Agent, Allocation, Token, Trial, User
from stalwart_master.services.users import hash_token, issue_token

from support import mint_agent_token

pytestmark = pytest.mark.integration
CONFIG = "entrypoint: python3 train.py\nsearcher: {name: single, metric: loss}\n"


@pytest.fixture
def trial_token(admin) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """A trial with a running allocation and its token, made as the scheduler and agent would."""
    experiment = admin.post("/api/v1/experiments", json={"config": CONFIG}).json()
    with admin.app_ref.state.sessions.begin() as session:
        trial = session.scalars(select(Trial).where(Trial.experiment_id == experiment["id"])).one()
        allocation = Allocation(
            trial_id=trial.id, run_id=1, resource_pool="nowhere", slots_needed=1, priority=42, state="RUNNING"
        )
        session.add(allocation)
        session.flush()
        owner = session.scalars(select(User).where(User.username == "admin")).one()
        secret = issue_token(session, owner, 1, kind="allocation")
        session.execute(
            update(Token).where(Token.token_hash == hash_token(secret)).values(allocation_id=allocation.id)
        )
        return trial.id, secret


def post(admin, trial_id: int, token: str, body: dict) -> int:  # type: ignore[no-untyped-def]
    response = admin.post(
        f"/api/v1/trials/{trial_id}/metrics",
        content=json.dumps(body),  # Python's json writes NaN/Infinity tokens, as the harness does
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    return response.status_code


def test_a_retried_batch_or_repeated_step_never_duplicates_and_nan_survives(admin, trial_token) -> None:  # type: ignore[no-untyped-def]
    trial_id, token = trial_token
    batch = {
        "run_id": 1,
        "batch_id": str(uuid.uuid4()),
        "metrics": [
            {"group": "training", "steps_completed": 1, "values": {"loss": math.nan, "lr": 0.1}},
            {"group": "training", "steps_completed": 2, "values": {"loss": math.inf, "grad": -math.inf}},
            {"group": "validation", "steps_completed": 2, "values": {"loss": 0.5}},
        ],
    }
    assert post(admin, trial_id, token, batch) == 204
    assert post(admin, trial_id, token, batch) == 204  # the same batch again: a retry
    again = {**batch, "batch_id": str(uuid.uuid4())}  # a new batch repeating stored steps
    assert post(admin, trial_id, token, again) == 204

    items = json.loads(admin.get(f"/api/v1/trials/{trial_id}/metrics").text)["items"]
    assert [(m["group"], m["steps_completed"]) for m in items] == [
        ("training", 1),
        ("training", 2),
        ("validation", 2),
    ]
    assert math.isnan(items[0]["values"]["loss"]) and items[0]["values"]["lr"] == 0.1
    assert items[1]["values"] == {"loss": math.inf, "grad": -math.inf}
    trial = admin.get(f"/api/v1/trials/{trial_id}").json()
    assert trial["steps_completed"] == 2 and trial["best_validation"] == 0.5


def test_a_trial_token_is_confined_to_its_own_trial(admin, trial_token) -> None:  # type: ignore[no-untyped-def]
    trial_id, token = trial_token
    body = {"run_id": 1, "batch_id": str(uuid.uuid4()), "metrics": []}
    assert post(admin, trial_id + 100000, token, body) == 403
    bad = {
        "run_id": 1,
        "batch_id": str(uuid.uuid4()),
        "metrics": [{"group": "a.b", "steps_completed": 1, "values": {}}],
    }
    assert post(admin, trial_id, token, bad) == 422
    assert post(admin, trial_id, "not-a-token", body) == 401


def test_a_retried_log_batch_adds_no_line_twice(admin, trial_token) -> None:  # type: ignore[no-untyped-def]
    trial_id, _ = trial_token
    # The allocation runs on an agent, and that agent's own token ships its logs.
    agent_id = f"logs-agent-{uuid.uuid4().hex[:8]}"
    with admin.app_ref.state.sessions.begin() as session:
        session.add(Agent(id=agent_id, resource_pool=agent_id, enabled=False, connected=False))
        session.flush()
        allocation_id = session.scalars(
            update(Allocation)
            .where(Allocation.trial_id == trial_id, Allocation.state == "RUNNING")
            .values(agent_id=agent_id)
            .returning(Allocation.id)
        ).one()
    agent_token = mint_agent_token(admin, agent_id)
    batch = {
        "batch_id": str(uuid.uuid4()),
        "lines": [
            {"ts": "2026-01-01T00:00:00Z", "rank": 0, "stream": "stdout", "message": f"line {i}"}
            for i in range(3)
        ],
    }
    headers = {"Authorization": f"Bearer {agent_token}"}
    for _ in range(2):  # the second POST is the agent retrying after a lost answer
        response = admin.post(f"/api/v1/allocations/{allocation_id}/logs", json=batch, headers=headers)
        assert response.status_code == 204, response.text
    lines = [json.loads(raw) for raw in admin.get(f"/api/v1/trials/{trial_id}/logs").text.splitlines()]
    assert [line["message"] for line in lines] == ["line 0", "line 1", "line 2"]
