"""Fixtures for the agent's end-to-end tests: agents on the shared test master."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from agent_cluster import Agents, login


@pytest.fixture(scope="session")
def cluster_api(live_master) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with login(live_master.url, live_master.admin_password) as client:
        yield client


@pytest.fixture
def agents(live_master, cluster_api: httpx.Client, tmp_path: Path) -> Iterator[Agents]:  # type: ignore[no-untyped-def]
    """Agents on the shared test master, each in a pool of the test's own; disabled afterwards."""
    response = cluster_api.post("/api/v1/agents/tokens")
    assert response.status_code == 201, response.text
    started = Agents(live_master.url, response.json()["token"], tmp_path / "agents")
    yield started
    started.stop_all()
    for agent_id in started.processes:
        cluster_api.post(f"/api/v1/agents/{agent_id}/disable", json={"drain": True})
