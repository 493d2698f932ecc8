"""The agent dies, restarts, loses slots, drains, or starts before the master: real master, real
agents, real trial runners (``trials/steps``), nothing faked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_cluster import Agents, login

from stalwart.context import build_context

from support import free_port, mint_agent_token, process_gone, start_master, wait_for

pytestmark = pytest.mark.e2e

STEPS_TRIAL = Path(__file__).parent / "trials" / "steps"
TERMINAL = {"COMPLETED", "CANCELED", "ERROR"}


def submit(
    api: httpx.Client, pool: str, *, steps: int, sleep: float, name: str = "ft", report: bool = True
) -> int:
    context = api.post(
        "/api/v1/contexts", content=build_context(STEPS_TRIAL), headers={"Content-Type": "application/gzip"}
    )
    assert context.status_code in (200, 201), context.text
    config = (
        f"name: {name}\nentrypoint: python3 train.py\n"
        f"hyperparameters: {{steps: {steps}, sleep: {sleep}, report: {str(report).lower()}}}\n"
        "searcher: {name: single, metric: loss}\nmax_restarts: 0\n"
        f"resources: {{resource_pool: {pool}}}\n"
    )
    response = api.post("/api/v1/experiments", json={"config": config, "context": context.json()["sha256"]})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def only_trial(api: httpx.Client, experiment_id: int) -> dict[str, Any]:
    wait_for(lambda: bool(api.get(f"/api/v1/experiments/{experiment_id}/trials").json()), 30, "the trial")
    (trial,) = api.get(f"/api/v1/experiments/{experiment_id}/trials").json()
    return dict(trial)


def runs(api: httpx.Client, trial_id: int) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/trials/{trial_id}/runs")
    assert response.status_code == 200, response.text
    return list(response.json())


def logs(api: httpx.Client, trial_id: int) -> list[str]:
    response = api.get(f"/api/v1/trials/{trial_id}/logs")
    return [json.loads(raw)["message"] for raw in response.text.splitlines() if raw.strip()]


def wait_for_line(api: httpx.Client, trial_id: int, line: str, timeout: float = 60) -> None:
    wait_for(lambda: line in logs(api, trial_id), timeout, f"{line!r} in the trial's logs", interval=0.2)


def wait_terminal(api: httpx.Client, experiment_id: int, timeout: float = 60) -> str:
    def state() -> str:
        return str(api.get(f"/api/v1/experiments/{experiment_id}").json()["state"])

    wait_for(lambda: state() in TERMINAL, timeout, f"experiment {experiment_id} to end", interval=0.2)
    return state()


def runner_pid(agents: Agents, agent_id: str, allocation_id: str) -> int:
    state = agents.work_dir(agent_id) / "allocations" / allocation_id / "state.json"
    return int(json.loads(state.read_text())["pid"])


def numbered(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("line ")]


def test_an_agent_sigkilled_and_restarted_keeps_its_trial_running_as_the_same_run(
    cluster_api: httpx.Client, agents: Agents
) -> None:
    pool = f"ft-{uuid.uuid4().hex[:6]}"
    agents.start(f"{pool}-a", 1, pool)
    experiment_id = submit(cluster_api, pool, steps=30, sleep=0.2)
    trial = only_trial(cluster_api, experiment_id)
    wait_for_line(cluster_api, trial["id"], "line 3")
    (run,) = runs(cluster_api, trial["id"])
    runner = runner_pid(agents, f"{pool}-a", run["allocation_id"])

    agents.sigkill(f"{pool}-a")
    assert not process_gone(runner)  # the trial does not die with its agent
    agents.start(f"{pool}-a", 1, pool)

    assert wait_terminal(cluster_api, experiment_id) == "COMPLETED"
    trial = cluster_api.get(f"/api/v1/trials/{trial['id']}").json()
    assert trial["restarts"] == 0 and trial["run_id"] == 1
    (after,) = runs(cluster_api, trial["id"])
    assert after["allocation_id"] == run["allocation_id"]
    assert (after["exit_code"], after["exit_reason"]) == (0, "exited")
    # Every line once, in order: nothing lost or repeated across the two agents.
    assert numbered(logs(cluster_api, trial["id"])) == list(range(1, 31))
    assert process_gone(runner)


def test_an_agent_back_with_fewer_slots_loses_only_the_run_on_the_missing_slot(
    cluster_api: httpx.Client, agents: Agents
) -> None:
    pool = f"ft-{uuid.uuid4().hex[:6]}"
    agent_id = f"{pool}-two"
    agents.start(agent_id, 2, pool)
    experiments = [submit(cluster_api, pool, steps=25, sleep=0.2, name=f"slot{i}") for i in range(2)]
    trials = [only_trial(cluster_api, e) for e in experiments]
    for trial in trials:
        wait_for_line(cluster_api, trial["id"], "line 2")
    slots = {s["index"]: s for s in cluster_api.get("/api/v1/slots").json() if s["agent_id"] == agent_id}
    lost_trial = slots[1]["trial_id"]
    kept_trial = slots[0]["trial_id"]
    (lost_run,) = runs(cluster_api, lost_trial)
    (kept_run,) = runs(cluster_api, kept_trial)
    lost_runner = runner_pid(agents, agent_id, lost_run["allocation_id"])

    agents.sigkill(agent_id)
    agents.start(agent_id, 1, pool)

    # The run on the vanished slot ends "agent lost" and the agent stops its process.
    wait_for(lambda: runs(cluster_api, lost_trial)[0]["state"] == "TERMINATED", 15, "the lost run to end")
    assert runs(cluster_api, lost_trial)[0]["exit_reason"] == "agent lost"
    wait_for(lambda: process_gone(lost_runner), 20, "the lost run's process to be killed")
    present = [s["index"] for s in cluster_api.get("/api/v1/slots").json() if s["agent_id"] == agent_id]
    assert present == [0]

    for experiment_id in experiments:
        assert wait_terminal(cluster_api, experiment_id) == "COMPLETED"
    (kept_after,) = runs(cluster_api, kept_trial)
    assert kept_after["allocation_id"] == kept_run["allocation_id"] and kept_after["exit_code"] == 0
    lost_runs = runs(cluster_api, lost_trial)
    assert [r["exit_reason"] for r in lost_runs] == ["agent lost", "exited"]
    for trial_id in (lost_trial, kept_trial):
        assert cluster_api.get(f"/api/v1/trials/{trial_id}").json()["restarts"] == 0


def test_sigterm_drains_an_agent_and_its_trial_resumes_on_another_from_its_checkpoint(
    cluster_api: httpx.Client, agents: Agents
) -> None:
    pool = f"ft-{uuid.uuid4().hex[:6]}"
    leaving = agents.start(f"{pool}-leaving", 1, pool)
    experiment_id = submit(cluster_api, pool, steps=30, sleep=0.2)
    trial = only_trial(cluster_api, experiment_id)
    wait_for_line(cluster_api, trial["id"], "line 3")
    agents.start(f"{pool}-staying", 1, pool)

    leaving.process.send_signal(signal.SIGTERM)
    assert leaving.process.wait(30) == 0  # once its trial has checkpointed and left

    assert wait_terminal(cluster_api, experiment_id) == "COMPLETED"
    first, second = runs(cluster_api, trial["id"])
    assert (first["agent_id"], first["exit_code"], first["exit_reason"]) == (f"{pool}-leaving", 0, "drained")
    assert (second["agent_id"], second["exit_reason"]) == (f"{pool}-staying", "exited")
    assert second["restored_checkpoint"] is not None
    trial = cluster_api.get(f"/api/v1/trials/{trial['id']}").json()
    assert trial["restarts"] == 0 and trial["state"] == "COMPLETED"
    # The second run started right after the step the first one checkpointed.
    assert numbered(logs(cluster_api, trial["id"])) == list(range(1, 31))
    agent = next(a for a in cluster_api.get("/api/v1/agents").json() if a["id"] == f"{pool}-leaving")
    assert agent["draining"] and agent["enabled"]


@pytest.fixture
def private_master(
    scratch_database: Callable[[str], str], tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """A master of the test's own (own database, short reconnect window) it can stop and start."""
    url = scratch_database("agentft")
    port = free_port()
    env = {
        "STALWART_DATABASE_URL": url,
        "STALWART_AGENT_RECONNECT_WAIT_SECONDS": "3",
        "STALWART_SCHEDULER_TICK_SECONDS": "0.2",
    }
    started: list[Any] = []

    def start() -> subprocess.Popen[bytes]:
        master = start_master(port, tmp_path / "master", env)
        started.append(master)
        return master.process

    start.port = port  # type: ignore[attr-defined]
    yield start
    for master in started:
        master.stop()


def test_an_agent_started_while_the_master_is_down_registers_once_it_is_up(
    private_master: Callable[[], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{private_master.port}"  # type: ignore[attr-defined]
    master = private_master()
    with login(url, os.environ["STALWART_ADMIN_PASSWORD"]) as api:
        token = mint_agent_token(api, "early")
    os.killpg(master.pid, signal.SIGKILL)
    master.wait(10)

    agents = Agents(url, {"early": token}.__getitem__, tmp_path / "agents")
    try:
        agents.start("early", 1, "default", wait=False)
        wait_for(
            lambda: agents.log("early").read_text().count("cannot register") >= 3, 30, "retries, backing off"
        )
        private_master()
        wait_for(lambda: agents.registrations("early") == 1, 15, "the agent to register")
        with login(url, os.environ["STALWART_ADMIN_PASSWORD"]) as api:
            (agent,) = api.get("/api/v1/agents").json()
        assert agent["id"] == "early" and agent["connected"]
    finally:
        agents.stop_all()


def test_an_agent_back_after_it_was_declared_lost_has_its_old_run_killed(
    private_master: Callable[[], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{private_master.port}"  # type: ignore[attr-defined]
    private_master()
    api = login(url, os.environ["STALWART_ADMIN_PASSWORD"])
    agents = Agents(url, partial(mint_agent_token, api), tmp_path / "agents")
    try:
        agents.start("late", 1, "default")
        # A trial that never reports, so it does not notice its run ended: only a kill stops it.
        experiment_id = submit(api, "default", steps=40, sleep=0.2, report=False)
        trial = only_trial(api, experiment_id)
        wait_for_line(api, trial["id"], "line 2")
        (run,) = runs(api, trial["id"])
        runner = runner_pid(agents, "late", run["allocation_id"])

        agents.sigkill("late")
        wait_for(lambda: runs(api, trial["id"])[0]["state"] == "TERMINATED", 15, "the agent to be lost")
        assert not process_gone(runner)  # still training, but the master has moved on
        agents.start("late", 1, "default")

        # It reported the old run; the master, which ended it, had it killed.
        wait_for(lambda: process_gone(runner), 20, "the old run's process to be killed")
        assert wait_terminal(api, experiment_id) == "COMPLETED"
        first, second = runs(api, trial["id"])
        assert first["exit_reason"] == "agent lost" and second["exit_reason"] == "exited"
        assert api.get(f"/api/v1/trials/{trial['id']}").json()["restarts"] == 0
    finally:
        agents.stop_all()
        api.close()
