"""Fixtures for the agent's end-to-end tests: agents on the shared test master."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from agent_cluster import Agents, login

from support import mint_agent_token


@pytest.fixture(scope="session")
def cluster_api(live_master) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with login(live_master.url, live_master.admin_password) as client:
        yield client


@pytest.fixture
def agents(live_master, cluster_api: httpx.Client, tmp_path: Path) -> Iterator[Agents]:  # type: ignore[no-untyped-def]
    """Agents on the shared test master, each in a pool of the test's own; disabled afterwards."""
    started = Agents(live_master.url, partial(mint_agent_token, cluster_api), tmp_path / "agents")
    yield started
    started.stop_all()
    for agent_id in started.processes:
        cluster_api.post(f"/api/v1/agents/{agent_id}/disable", json={"drain": True})
