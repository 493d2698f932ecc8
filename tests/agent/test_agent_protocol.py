"""The master's side of the agent protocol, spoken by hand: registration with ``running``, the
kills it answers with, drain and re-registration. In-process master on the real database."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from stalwart.context import build_context

from support import mint_agent_token, wait_for

pytestmark = pytest.mark.integration

STEPS_TRIAL = Path(__file__).parent / "trials" / "steps"


class FakeAgent:
    """Registers and polls like the daemon, with a token bound to its own id, in a pool of its own."""

    def __init__(self, admin: Any, slots: int) -> None:
        self.app = admin
        self.id = f"proto-{uuid.uuid4().hex[:8]}"
        self.pool = f"pool-{self.id}"
        self.headers = {"Authorization": f"Bearer {mint_agent_token(admin, self.id)}"}
        self.slots = slots

    def register(
        self, running: Sequence[str] = (), *, slots: int | None = None, **extra: Any
    ) -> dict[str, Any]:
        body = {
            "agent_id": self.id,
            "resource_pool": self.pool,
            "slots": [
                {"index": i, "type": "artificial", "uuid": f"{self.id}-{i}"}
                for i in range(self.slots if slots is None else slots)
            ],
            "running": list(running),
            **extra,
        }
        response = self.app.post("/api/v1/agents/register", json=body, headers=self.headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def poll(self) -> list[dict[str, Any]]:
        response = self.app.get(
            f"/api/v1/agents/{self.id}/work", params={"timeout_seconds": 0}, headers=self.headers
        )
        assert response.status_code == 200, response.text
        return list(response.json()["actions"])

    def drain(self) -> int:
        return int(self.app.post(f"/api/v1/agents/{self.id}/drain", headers=self.headers).status_code)


@pytest.fixture
def agent(admin: Any) -> FakeAgent:
    return FakeAgent(admin, slots=1)


def submit(admin: Any, pool: str) -> int:
    context = admin.post(
        "/api/v1/contexts", content=build_context(STEPS_TRIAL), headers={"Content-Type": "application/gzip"}
    )
    config = (
        "entrypoint: python3 train.py\nsearcher: {name: single, metric: loss}\n"
        f"resources: {{resource_pool: {pool}}}\n"
    )
    response = admin.post("/api/v1/experiments", json={"config": config, "context": context.json()["sha256"]})
    assert response.status_code == 201, response.text
    experiment_id = int(response.json()["id"])
    wait_for(lambda: bool(admin.get(f"/api/v1/experiments/{experiment_id}/trials").json()), 30, "the trial")
    return int(admin.get(f"/api/v1/experiments/{experiment_id}/trials").json()[0]["id"])


def runs(admin: Any, trial_id: int) -> list[dict[str, Any]]:
    return list(admin.get(f"/api/v1/trials/{trial_id}/runs").json())


def agent_row(admin: Any, agent_id: str) -> dict[str, Any]:
    return dict(next(a for a in admin.get("/api/v1/agents").json() if a["id"] == agent_id))


def assigned_to(admin: Any, trial_id: int, agent_id: str | None) -> bool:
    found = runs(admin, trial_id)
    return bool(found) and found[-1]["state"] == "ASSIGNED" and found[-1]["agent_id"] == agent_id


def test_drain_requeues_what_was_not_handed_over_and_preempts_what_runs(admin: Any, agent: FakeAgent) -> None:
    agent.register()
    trial_id = submit(admin, agent.pool)
    wait_for(lambda: assigned_to(admin, trial_id, agent.id), 30, "the assignment")

    assert agent.drain() == 204
    # Never delivered: back in the queue, and not placed on the draining agent again.
    (run,) = runs(admin, trial_id)
    assert (run["state"], run["agent_id"]) == ("PENDING", None)
    row = agent_row(admin, agent.id)
    assert row["draining"] and row["enabled"]
    with pytest.raises(TimeoutError):
        wait_for(lambda: assigned_to(admin, trial_id, agent.id), 2, "an assignment to a draining agent")

    # Back without draining (a restart): it gets work again.
    agent.register()
    assert not agent_row(admin, agent.id)["draining"]
    wait_for(lambda: assigned_to(admin, trial_id, agent.id), 30, "the assignment")
    (start,) = agent.poll()
    assert start["type"] == "start"

    assert agent.drain() == 204  # delivered: asked to checkpoint and leave
    signal = admin.get(
        f"/api/v1/allocations/{start['allocation_id']}/signals/preemption",
        params={"timeout_seconds": 0},
        headers={"Authorization": f"Bearer {start['allocation_token']}"},
    )
    assert signal.json() == {"preempt": True}
    # A draining agent that registers again (the master came back) stays draining.
    agent.register([start["allocation_id"]], draining=True)
    assert agent_row(admin, agent.id)["draining"]
    assert runs(admin, trial_id)[-1]["state"] == "ASSIGNED"


def test_registration_keeps_reported_runs_ends_missing_ones_and_kills_ended_ones(
    admin: Any, agent: FakeAgent
) -> None:
    agent.slots = 2
    agent.register()
    first, second = submit(admin, agent.pool), submit(admin, agent.pool)
    wait_for(
        lambda: assigned_to(admin, first, agent.id) and assigned_to(admin, second, agent.id),
        30,
        "assignments",
    )
    starts = {a["trial_id"]: a for a in agent.poll()}
    slot_of = {
        s["trial_id"]: s["index"] for s in admin.get("/api/v1/slots").json() if s["agent_id"] == agent.id
    }
    on_one, on_zero = (first, second) if slot_of[first] == 1 else (second, first)
    kept, missing = starts[on_one]["allocation_id"], starts[on_zero]["allocation_id"]
    stranger = str(uuid.uuid4())

    answer = agent.register([kept, stranger])

    # The kept run is the same run; the one the agent lost ends "agent lost" and resumes uncounted.
    assert [(r["allocation_id"], r["state"]) for r in runs(admin, on_one)] == [(kept, "ASSIGNED")]
    lost = runs(admin, on_zero)[0]
    assert (lost["allocation_id"], lost["state"], lost["exit_reason"]) == (
        missing,
        "TERMINATED",
        "agent lost",
    )
    assert admin.get(f"/api/v1/trials/{on_zero}").json()["restarts"] == 0
    # What the agent runs but the master does not know there is killed.
    assert answer["actions"] == [{"type": "kill", "allocation_id": stranger, "grace_seconds": 10}]

    # Back with one slot: the run on the missing slot 1 ends "agent lost" and the agent kills it.
    answer = agent.register([kept], slots=1)
    present = [s["index"] for s in admin.get("/api/v1/slots").json() if s["agent_id"] == agent.id]
    assert present == [0]
    (gone,) = runs(admin, on_one)[:1]
    assert (gone["state"], gone["exit_reason"]) == ("TERMINATED", "agent lost")
    assert answer["actions"] == [{"type": "kill", "allocation_id": kept, "grace_seconds": 10}]
    assert admin.get(f"/api/v1/trials/{on_one}").json()["restarts"] == 0
