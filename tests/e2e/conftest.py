"""Real agents (artificial slots) beside the real master, for end-to-end training tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from support import ManagedProcess, agent_argv, mint_agent_token, spawn, wait_for


@pytest.fixture(scope="session")
def admin_api(live_master) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    token = httpx.post(
        f"{live_master.url}/api/v1/auth/login",
        json={"username": live_master.admin_username, "password": live_master.admin_password},
    ).json()["token"]
    with httpx.Client(
        base_url=live_master.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as c:
        yield c


@pytest.fixture(scope="session")
def agent_token(admin_api: httpx.Client) -> Callable[[str], str]:
    """Gives the token for an agent id, minted once per id: a token acts for its own agent only."""
    tokens: dict[str, str] = {}

    def token_for(agent_id: str) -> str:
        if agent_id not in tokens:
            tokens[agent_id] = mint_agent_token(admin_api, agent_id)
        return tokens[agent_id]

    return token_for


@pytest.fixture(autouse=True)
def no_leftover_work(admin_api: httpx.Client) -> None:
    """Kill what earlier tests on this worker's master left running or queued.

    Every test here starts agents in the default pool, where a leftover trial (a test that failed
    half-way, or a CLI test that never ran its experiment) would be scheduled and hold the slots
    this test counts on.
    """
    live = ["ACTIVE", "PAUSED", "STOPPING_CANCELED", "STOPPING_COMPLETED", "STOPPING_ERROR"]
    page = admin_api.get("/api/v1/experiments", params={"state": live, "limit": 1000}).json()
    for experiment in page["items"]:
        admin_api.post(f"/api/v1/experiments/{experiment['id']}/kill")


@pytest.fixture
def start_agent(
    live_master, agent_token: Callable[[str], str], admin_api: httpx.Client, tmp_path: Path
) -> Iterator[Callable[..., ManagedProcess]]:  # type: ignore[no-untyped-def]
    """Starts `stalwart-agent --artificial-slots N` processes, stopped and disabled after the test."""
    started: list[tuple[str, ManagedProcess]] = []

    def start(agent_id: str, slots: int, pool: str = "default") -> ManagedProcess:
        token = agent_token(agent_id)
        process = spawn(
            [
                *agent_argv(live_master.url, token, agent_id, slots, pool, tmp_path / agent_id),
                # Stopping the agent (SIGTERM) drains it; trials that ignore preemption are stopped
                # after this, well before ManagedProcess.stop's SIGKILL would orphan them.
                "--drain-timeout",
                "5",
            ],
            tmp_path / f"{agent_id}.log",
        )
        started.append((agent_id, process))

        def registered() -> bool:
            if not process.alive():
                raise RuntimeError(f"agent exited:\n{process.log_tail()}")
            agents = admin_api.get("/api/v1/agents").json()
            return any(a["id"] == agent_id and a["connected"] for a in agents)

        wait_for(registered, 30, f"agent {agent_id} to register")
        return process

    yield start
    for agent_id, process in started:
        process.stop()
        # A stopped agent would otherwise keep its slots until declared lost; later tests must not see it.
        admin_api.post(f"/api/v1/agents/{agent_id}/disable", json={"drain": True})
