"""An agent dies, comes back or is drained: trials move or stay, and never use up their restarts."""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from chaos_cluster import ChaosCluster
from invariants import Expected, check_invariants

from support import wait_for

pytestmark = pytest.mark.chaos

# 20 steps, a checkpoint at 20, then slower steps long enough for the scenario to act mid-way.
ACTIONS: list[dict[str, Any]] = [
    {"write_mb": 2},
    {"report": 20, "every": 0.05},
    {"checkpoint": True},
    {"report": 40, "every": 0.1},
    {"checkpoint": True},
    {"report": 10, "every": 0.05},
]
STEPS = 70


def current_agent(cluster: ChaosCluster, trial_id: int) -> str:
    wait_for(lambda: bool(cluster.runs(trial_id)) and cluster.runs(trial_id)[-1]["agent_id"], 30, "an agent")
    return str(cluster.runs(trial_id)[-1]["agent_id"])


def test_an_agent_killed_with_another_available_moves_its_trial_there_from_the_latest_checkpoint(
    chaos_cluster: Callable[..., ChaosCluster],
) -> None:
    cluster = chaos_cluster({"agent-a": 1, "agent-b": 1})
    experiment = cluster.submit("agent-sigkill", ACTIONS, max_restarts=0)
    (trial_id,) = experiment.trial_ids
    cluster.wait_event(trial_id, "checkpoint", step=20, run=1)
    cluster.wait_step(trial_id, 25)
    victim = current_agent(cluster, trial_id)
    survivor = next(a for a in cluster.agents if a != victim)
    killed_at = time.time()
    cluster.agents[victim].kill()

    start = cluster.wait_event(trial_id, "start", run=2, timeout=60)
    first_step_again = _first_report_after(cluster, trial_id, run=2)
    print(
        f"recovery after agent SIGKILL: run 2 started {start['t'] - killed_at:.1f}s after the kill, "
        f"first new step reported {first_step_again - killed_at:.1f}s after it "
        f"(reconnect window {cluster.settings.reconnect_wait}s)"
    )
    # The machine comes back: whatever it still ran of the lost allocation must go.
    cluster.agents[victim].start()
    check_invariants(cluster, Expected(experiment.id, restarts=0, steps=STEPS))
    # The lost run may have trained on unseen until the master gave up on it: run 2 starts from
    # whatever it had checkpointed by then (the newest checkpoint the master accepted).
    saved = [e for e in cluster.journal(trial_id) if e["event"] == "checkpoint" and e["run"] == 1]
    assert start["restored"] == saved[-1]["uuid"], (start, saved)
    runs = cluster.runs(trial_id)
    assert runs[0]["exit_reason"] == "agent lost" and runs[1]["agent_id"] == survivor, runs
    # Determined's bound: lost within the reconnect window, restarted within twice that, plus the
    # few seconds a trial takes to start.
    bound = 2 * cluster.settings.reconnect_wait + 5
    assert start["t"] - killed_at < bound, f"run 2 started {start['t'] - killed_at:.1f}s after the kill"


def test_an_agent_killed_and_restarted_within_the_window_keeps_its_trial_running(
    chaos_cluster: Callable[..., ChaosCluster],
) -> None:
    cluster = chaos_cluster({"agent-a": 1}, reconnect_wait=5.0)
    experiment = cluster.submit("agent-reattach", ACTIONS, max_restarts=0)
    (trial_id,) = experiment.trial_ids
    cluster.wait_event(trial_id, "checkpoint", step=20, run=1)
    cluster.wait_step(trial_id, 25)
    allocation = cluster.runs(trial_id)[0]["allocation_id"]
    cluster.agents["agent-a"].restart(downtime=0)

    check_invariants(cluster, Expected(experiment.id, restarts=0, steps=STEPS))
    runs = cluster.runs(trial_id)
    assert [(r["run_id"], str(r["allocation_id"])) for r in runs] == [(1, str(allocation))], runs
    journal = cluster.journal(trial_id)
    assert len({e["pid"] for e in journal}) == 1, "the trial process was replaced"
    # The restarted agent ships the rest of the trial's output, neither losing nor repeating lines.
    messages = [
        json.loads(line)["message"]
        for line in cluster.api.request("GET", f"/api/v1/trials/{trial_id}/logs").text.splitlines()
    ]
    trial_lines = [m for m in messages if m.startswith("chaos-trial: ")]
    assert [m.split()[1] for m in trial_lines] == [e["event"] for e in journal], trial_lines


def test_a_drained_agent_hands_its_trial_to_another_agent_through_a_preemption_checkpoint(
    chaos_cluster: Callable[..., ChaosCluster],
) -> None:
    cluster = chaos_cluster({"agent-a": 1, "agent-b": 1})
    experiment = cluster.submit("agent-drain", ACTIONS, max_restarts=0)
    (trial_id,) = experiment.trial_ids
    cluster.wait_step(trial_id, 25)
    victim = current_agent(cluster, trial_id)
    survivor = next(a for a in cluster.agents if a != victim)
    cluster.agents[victim].signal(signal.SIGTERM)

    preempted = cluster.wait_event(trial_id, "checkpoint", run=1, reason="preempt", timeout=30)
    start = cluster.wait_event(trial_id, "start", run=2, timeout=60)
    assert start["restored"] == preempted["uuid"] and start["restored_step"] == preempted["step"]
    # Its runs gone, the drained agent exits by itself, successfully.
    assert cluster.agents[victim].wait_exit(30) == 0
    check_invariants(cluster, Expected(experiment.id, restarts=0, steps=STEPS))
    runs = cluster.runs(trial_id)
    assert [(r["agent_id"], r["exit_code"]) for r in runs] == [(victim, 0), (survivor, 0)], runs
    assert runs[0]["exit_reason"] == "drained"


def _first_report_after(cluster: ChaosCluster, trial_id: int, run: int) -> float:
    """When the master stored the first metric row of ``run`` (seconds since the epoch)."""

    def reported() -> bool:
        return any(r["run_id"] == run for r in _all_rows(cluster, trial_id))

    wait_for(reported, 60, f"a metric row of run {run}", interval=0.1)
    first = min(r["reported_at"] for r in _all_rows(cluster, trial_id) if r["run_id"] == run)
    stamp = dt.datetime.fromisoformat(first)
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).timestamp()


def _all_rows(cluster: ChaosCluster, trial_id: int) -> list[dict[str, Any]]:
    path = f"/api/v1/trials/{trial_id}/metrics"
    return list(cluster.api.get(path, params={"include_archived": "true"})["items"])
