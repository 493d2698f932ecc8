"""An agent credential acts for its own agent id only (security finding 3).

The finding: with the local agent token anyone could register a new agent id and receive ``start``
actions, with allocation tokens, for other users' trials; end someone else's running trial with
``POST /allocations/{id}/state {"state": "TERMINATED"}`` (it was then marked COMPLETED); and store
fake log lines for another allocation. Here agent A's token tries each against agent B, which runs
another user's trial, and B's trial must stay exactly as it was. In-process master on the real
database; the agents are spoken by hand, as in ``tests/agent/test_agent_protocol.py``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from stalwart.cli.main import app as cli_app

from support import mint_agent_token, wait_for

pytestmark = pytest.mark.integration

PASSWORD = "agent-creds-password-1"
CONFIG = """\
name: agent-creds
entrypoint: python3 train.py
searcher: {{name: single, metric: loss}}
resources: {{resource_pool: {pool}}}
"""
LINE = {"ts": "2026-01-01T00:00:00Z", "rank": 0, "stream": "stdout", "message": "loss=0.0 (forged)"}


class FakeAgent:
    """Registers, polls and reports like the daemon, with the token an admin made for its id."""

    def __init__(self, http: Any, agent_id: str, token: str) -> None:
        self.http = http
        self.id = agent_id
        self.pool = f"pool-{agent_id}"
        self.headers = {"Authorization": f"Bearer {token}"}

    @classmethod
    def minted(cls, admin: Any, role: str) -> FakeAgent:
        agent_id = f"{role}-{uuid.uuid4().hex[:8]}"
        return cls(admin, agent_id, mint_agent_token(admin, agent_id))

    def register_as(self, agent_id: str, pool: str | None = None) -> httpx.Response:
        body = {
            "agent_id": agent_id,
            "resource_pool": pool or self.pool,
            "slots": [{"index": 0, "type": "artificial", "uuid": f"{agent_id}-0"}],
            "running": [],
        }
        response: httpx.Response = self.http.post("/api/v1/agents/register", json=body, headers=self.headers)
        return response

    def register(self) -> None:
        response = self.register_as(self.id)
        assert response.status_code == 200, response.text

    def poll_for(self, agent_id: str) -> httpx.Response:
        response: httpx.Response = self.http.get(
            f"/api/v1/agents/{agent_id}/work", params={"timeout_seconds": 0}, headers=self.headers
        )
        return response

    def drain(self, agent_id: str) -> int:
        return int(self.http.post(f"/api/v1/agents/{agent_id}/drain", headers=self.headers).status_code)

    def report_state(self, allocation_id: str, state: str) -> int:
        body = {"state": state, "exit_code": 0}
        path = f"/api/v1/allocations/{allocation_id}/state"
        return int(self.http.post(path, json=body, headers=self.headers).status_code)

    def ship_log(self, allocation_id: str) -> int:
        body = {"batch_id": str(uuid.uuid4()), "lines": [LINE]}
        path = f"/api/v1/allocations/{allocation_id}/logs"
        return int(self.http.post(path, json=body, headers=self.headers).status_code)


@dataclass
class Victim:
    """Agent B with another user's trial assigned to it (not yet handed over)."""

    agent: FakeAgent
    experiment_id: int
    trial_id: int


def runs(admin: Any, trial_id: int) -> list[dict[str, Any]]:
    return list(admin.get(f"/api/v1/trials/{trial_id}/runs").json())


def agent_row(admin: Any, agent_id: str) -> dict[str, Any] | None:
    return next((a for a in admin.get("/api/v1/agents").json() if a["id"] == agent_id), None)


def log_lines(admin: Any, trial_id: int) -> list[str]:
    response = admin.get(f"/api/v1/trials/{trial_id}/logs")
    assert response.status_code == 200, response.text
    return [json.loads(raw)["message"] for raw in response.text.splitlines()]


@pytest.fixture
def attacker(admin: Any) -> FakeAgent:
    """Agent A: registered with its own token, in a pool of its own where nothing is scheduled."""
    agent = FakeAgent.minted(admin, "agent-a")
    agent.register()
    return agent


@pytest.fixture
def victim(admin: Any) -> Iterator[Victim]:
    agent = FakeAgent.minted(admin, "agent-b")
    agent.register()
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    created = admin.post("/api/v1/users", json={"username": owner, "password": PASSWORD})
    assert created.status_code == 201, created.text
    login = admin.post("/api/v1/auth/login", json={"username": owner, "password": PASSWORD})
    assert login.status_code == 200, login.text
    as_owner = {"Authorization": f"Bearer {login.json()['token']}"}
    experiment = admin.post(
        "/api/v1/experiments", json={"config": CONFIG.format(pool=agent.pool)}, headers=as_owner
    )
    assert experiment.status_code == 201, experiment.text
    experiment_id = int(experiment.json()["id"])

    def assigned() -> bool:
        trials = admin.get(f"/api/v1/experiments/{experiment_id}/trials").json()
        found = runs(admin, trials[0]["id"]) if trials else []
        return bool(found) and (found[-1]["state"], found[-1]["agent_id"]) == ("ASSIGNED", agent.id)

    wait_for(assigned, 30, "the trial's assignment to agent B")
    trial_id = int(admin.get(f"/api/v1/experiments/{experiment_id}/trials").json()[0]["id"])
    yield Victim(agent, experiment_id, trial_id)
    admin.post(f"/api/v1/experiments/{experiment_id}/kill")


def running_on_victim(admin: Any, victim: Victim) -> str:
    """B takes its start and reports the run RUNNING; returns the allocation id."""
    response = victim.agent.poll_for(victim.agent.id)
    assert response.status_code == 200, response.text
    (start,) = response.json()["actions"]
    assert start["type"] == "start" and start["trial_id"] == victim.trial_id
    assert victim.agent.report_state(start["allocation_id"], "RUNNING") == 204
    assert runs(admin, victim.trial_id)[-1]["state"] == "RUNNING"
    return str(start["allocation_id"])


def test_an_agent_token_cannot_register_as_another_agent_or_as_a_new_one(
    admin: Any, attacker: FakeAgent, victim: Victim
) -> None:
    before = agent_row(admin, victim.agent.id)
    # As B (which would also end B's runs "agent lost": it reports none running) and as a new id.
    assert attacker.register_as(victim.agent.id, pool=attacker.pool).status_code == 403
    newcomer = f"newcomer-{uuid.uuid4().hex[:8]}"
    assert attacker.register_as(newcomer, pool=victim.agent.pool).status_code == 403

    assert agent_row(admin, newcomer) is None
    after = agent_row(admin, victim.agent.id)
    assert after is not None and before is not None
    assert (after["resource_pool"], after["enabled"], after["draining"]) == (victim.agent.pool, True, False)
    (run,) = runs(admin, victim.trial_id)
    assert (run["state"], run["agent_id"]) == ("ASSIGNED", victim.agent.id)


def test_an_agent_token_cannot_take_another_agents_work(
    admin: Any, attacker: FakeAgent, victim: Victim
) -> None:
    stolen = attacker.poll_for(victim.agent.id)
    assert stolen.status_code == 403, stolen.text
    assert "allocation_token" not in stolen.text
    # The start is still B's to take, with its allocation token.
    response = victim.agent.poll_for(victim.agent.id)
    assert response.status_code == 200, response.text
    (start,) = response.json()["actions"]
    assert (start["type"], start["trial_id"]) == ("start", victim.trial_id) and start["allocation_token"]


def test_an_agent_token_cannot_drain_another_agent(admin: Any, attacker: FakeAgent, victim: Victim) -> None:
    assert attacker.drain(victim.agent.id) == 403
    row = agent_row(admin, victim.agent.id)
    assert row is not None and not row["draining"]
    (run,) = runs(admin, victim.trial_id)
    assert (run["state"], run["agent_id"]) == ("ASSIGNED", victim.agent.id)
    assert attacker.drain(attacker.id) == 204  # its own agent it may drain


def test_an_agent_token_cannot_end_or_write_logs_for_another_agents_allocation(
    admin: Any, attacker: FakeAgent, victim: Victim
) -> None:
    allocation_id = running_on_victim(admin, victim)

    # Not found, exactly as an allocation that does not exist: A cannot even learn it is there.
    assert attacker.report_state(allocation_id, "TERMINATED") == 404
    assert attacker.ship_log(allocation_id) == 404
    assert attacker.report_state(str(uuid.uuid4()), "TERMINATED") == 404

    (run,) = runs(admin, victim.trial_id)
    assert (run["allocation_id"], run["state"], run["ended_at"]) == (allocation_id, "RUNNING", None)
    assert admin.get(f"/api/v1/trials/{victim.trial_id}").json()["state"] == "ACTIVE"
    assert admin.get(f"/api/v1/experiments/{victim.experiment_id}").json()["state"] == "ACTIVE"
    assert log_lines(admin, victim.trial_id) == []

    # B itself may: the refusals above were for the credential, not for the requests.
    assert victim.agent.ship_log(allocation_id) == 204
    assert log_lines(admin, victim.trial_id) == [LINE["message"]]


def test_a_revoked_agent_token_is_refused_on_its_next_request(admin: Any) -> None:
    agent_id = f"revoked-{uuid.uuid4().hex[:8]}"
    created = admin.post("/api/v1/agents/tokens", json={"agent_id": agent_id})
    assert created.status_code == 201, created.text
    assert created.json()["agent_id"] == agent_id
    agent = FakeAgent(admin, agent_id, created.json()["token"])
    agent.register()
    assert agent.poll_for(agent_id).status_code == 200

    assert admin.delete(f"/api/v1/agents/tokens/{created.json()['id']}").status_code == 204
    assert agent.poll_for(agent_id).status_code == 401
    assert agent.register_as(agent_id).status_code == 401
    assert agent.drain(agent_id) == 401
    (listed,) = [t for t in admin.get("/api/v1/agents/tokens").json() if t["id"] == created.json()["id"]]
    assert listed["agent_id"] == agent_id and listed["revoked_at"] is not None


def test_an_agent_token_is_minted_for_an_agent_id_by_admins_only(client: Any, admin_token: str) -> None:
    admin = {"Authorization": f"Bearer {admin_token}"}
    assert client.post("/api/v1/agents/tokens", headers=admin, json={}).status_code == 422
    assert client.post("/api/v1/agents/tokens", headers=admin, json={"agent_id": "a/b"}).status_code == 422
    name = f"plain-{uuid.uuid4().hex[:8]}"
    assert (
        client.post("/api/v1/users", headers=admin, json={"username": name, "password": PASSWORD}).status_code
        == 201
    )
    login = client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}).json()
    plain = {"Authorization": f"Bearer {login['token']}"}
    assert client.post("/api/v1/agents/tokens", headers=plain, json={"agent_id": "mine"}).status_code == 403
    assert client.get("/api/v1/agents/tokens", headers=plain).status_code == 403
    assert client.delete("/api/v1/agents/tokens/1", headers=plain).status_code == 403


@pytest.mark.e2e
def test_the_cli_revokes_an_agent_token(live_master: Any, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"STALWART_MASTER": live_master.url, "STALWART_CONFIG_DIR": str(tmp_path), "STALWART_TOKEN": None}

    def cli(*args: str) -> Any:
        result = runner.invoke(cli_app, list(args), env=env)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result

    cli("user", "login", live_master.admin_username, "--password", live_master.admin_password)
    agent_id = f"cli-revoked-{uuid.uuid4().hex[:8]}"
    created = json.loads(cli("agent", "token", "create", agent_id, "--json").stdout)
    assert created["agent_id"] == agent_id
    headers = {"Authorization": f"Bearer {created['token']}"}
    work = f"{live_master.url}/api/v1/agents/{agent_id}/work"
    body = {"agent_id": agent_id, "resource_pool": f"pool-{agent_id}", "slots": [], "running": []}
    assert (
        httpx.post(f"{live_master.url}/api/v1/agents/register", json=body, headers=headers).status_code == 200
    )

    cli("agent", "token", "revoke", str(created["id"]))
    assert httpx.get(work, params={"timeout_seconds": 0}, headers=headers).status_code == 401
    listed = {t["id"]: t for t in json.loads(cli("agent", "token", "list", "--json").stdout)}
    assert listed[created["id"]]["revoked_at"] is not None
