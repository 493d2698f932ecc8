"""The Cluster page's queue and pools: runs in the scheduler's own order, someone else's runs shown
without saying whose, and each pool's agents and slots as the scheduler counts them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from support import mint_agent_token, wait_for

pytestmark = pytest.mark.integration
PASSWORD = "queue-password-1"


def _config(name: str, pool: str, priority: int) -> str:
    return (
        f"name: {name}\nentrypoint: python3 train.py\nsearcher: {{name: single, metric: loss}}\n"
        f"resources: {{resource_pool: {pool}, priority: {priority}, slots_per_trial: 1}}\n"
    )


def _pool_entries(admin: Any, pool: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    response = admin.get("/api/v1/job-queues", headers=headers or {})
    assert response.status_code == 200, response.text
    return [entry for entry in response.json() if entry["resource_pool"] == pool]


def _queued(admin: Any, pool: str, name: str, priority: int, **extra: Any) -> int:
    """An active experiment whose run the scheduler queues in ``pool``; returns once it is queued."""
    created = admin.post("/api/v1/experiments", json={"config": _config(name, pool, priority), **extra})
    assert created.status_code == 201, created.text
    experiment = int(created.json()["id"])
    wait_for(
        lambda: experiment in {e["experiment_id"] for e in _pool_entries(admin, pool)},
        30,
        f"a queued run of experiment {experiment}",
    )
    return experiment


def test_the_queue_is_in_scheduling_order_priority_first_then_age(admin) -> None:  # type: ignore[no-untyped-def]
    pool = f"queue-{uuid.uuid4().hex[:8]}"  # no agent serves it: every run waits
    older_low = _queued(admin, pool, "older-low", 50)
    urgent = _queued(admin, pool, "urgent", 10)
    newer_low = _queued(admin, pool, "newer-low", 50)
    try:
        entries = _pool_entries(admin, pool)
        assert [e["experiment_id"] for e in entries] == [urgent, older_low, newer_low]
        assert [e["position"] for e in entries] == [1, 2, 3]
        assert [e["priority"] for e in entries] == [10, 50, 50]
        first = entries[0]
        assert first["experiment_name"] == "urgent" and first["owner"] == "admin"
        assert first["state"] == "PENDING" and first["slots"] == 1 and first["started_at"] is None
        assert first["trial_id"] is not None and first["queued_at"]
    finally:
        for experiment in (older_low, urgent, newer_low):
            admin.post(f"/api/v1/experiments/{experiment}/kill")
    wait_for(lambda: not _pool_entries(admin, pool), 30, "the killed runs to leave the queue")


def _login(admin: Any) -> dict[str, str]:
    name = f"queue-{uuid.uuid4().hex[:8]}"
    assert admin.post("/api/v1/users", json={"username": name, "password": PASSWORD}).status_code == 201
    token = admin.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def test_an_outsider_sees_that_a_run_waits_but_not_whose_or_what(admin) -> None:  # type: ignore[no-untyped-def]
    pool = f"hidden-{uuid.uuid4().hex[:8]}"
    workspace = admin.post("/api/v1/workspaces", json={"name": f"ws-{pool}"}).json()["id"]
    project = admin.post(f"/api/v1/workspaces/{workspace}/projects", json={"name": "p"}).json()["id"]
    secret = _queued(admin, pool, "secret-run", 20, project_id=project)
    try:
        (entry,) = _pool_entries(admin, pool, _login(admin))
        assert entry["experiment_id"] is None and entry["trial_id"] is None
        assert entry["experiment_name"] is None and entry["owner"] is None
        assert (entry["position"], entry["priority"], entry["state"]) == (1, 20, "PENDING")
        assert "secret-run" not in admin.get("/api/v1/job-queues", headers=_login(admin)).text
    finally:
        admin.post(f"/api/v1/experiments/{secret}/kill")


def _register(admin: Any, agent_id: str, pool: str, slots: int) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {mint_agent_token(admin, agent_id)}"}
    body = {
        "agent_id": agent_id,
        "resource_pool": pool,
        "slots": [{"index": i, "type": "artificial", "uuid": f"{agent_id}-{i}"} for i in range(slots)],
        "running": [],
    }
    response = admin.post("/api/v1/agents/register", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return headers


def _pool(admin: Any, name: str) -> dict[str, Any]:
    response = admin.get("/api/v1/resource-pools")
    assert response.status_code == 200, response.text
    (pool,) = [p for p in response.json() if p["name"] == name]
    return dict(pool)


def test_pools_count_agents_and_slots_as_the_scheduler_sees_them(admin, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    name = f"pool-{uuid.uuid4().hex[:8]}"
    big, small = f"{name}-big", f"{name}-small"
    _register(admin, big, name, 2)
    _register(admin, small, name, 1)
    assert admin.post(f"/api/v1/agents/{small}/disable", json={"drain": False}).status_code == 200
    assert _pool(admin, name) == {
        "name": name,
        "agents": 2,
        "slots_total": 3,
        "slots_used": 0,
        "slots_free": 2,  # the disabled agent's slot is not offered
        "preemption": False,
    }
    experiment = _queued(admin, name, "placed", 42)
    try:
        wait_for(lambda: _pool(admin, name)["slots_used"] == 1, 30, "the run to be placed on a slot")
        assert (_pool(admin, name)["slots_free"], _pool(admin, name)["slots_total"]) == (1, 3)
        (entry,) = _pool_entries(admin, name)
        assert entry["state"] in ("ASSIGNED", "RUNNING")
    finally:
        admin.post(f"/api/v1/experiments/{experiment}/kill")
    monkeypatch.setitem(admin.app_ref.state.settings.pool_preemption, name, True)
    assert _pool(admin, name)["preemption"] is True


def test_a_pool_that_only_a_waiting_run_names_is_listed_empty(admin) -> None:  # type: ignore[no-untyped-def]
    pool = f"nobody-{uuid.uuid4().hex[:8]}"
    experiment = _queued(admin, pool, "lonely", 42)
    try:
        assert _pool(admin, pool) == {
            "name": pool,
            "agents": 0,
            "slots_total": 0,
            "slots_used": 0,
            "slots_free": 0,
            "preemption": False,
        }
    finally:
        admin.post(f"/api/v1/experiments/{experiment}/kill")
