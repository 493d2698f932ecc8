"""The master is SIGKILLed: trials keep running, agents reconnect, nothing is lost or redone."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from chaos_cluster import ChaosCluster
from invariants import Expected, check_invariants

pytestmark = pytest.mark.chaos


@pytest.mark.parametrize("downtime", [0, 20])
def test_a_master_killed_mid_experiment_and_restarted_lets_it_complete_without_a_restart(
    chaos_cluster: Callable[..., ChaosCluster], downtime: int
) -> None:
    cluster = chaos_cluster({"agent-a": 1})
    # The trial still trains for a few seconds after the master is back.
    slow = int((downtime + 6) / 0.1)
    experiment = cluster.submit(
        "master-sigkill",
        [
            {"report": 20, "every": 0.05},
            {"checkpoint": True},
            {"report": slow, "every": 0.1},
            {"checkpoint": True},
            {"report": 10, "every": 0.05},
        ],
    )
    (trial_id,) = experiment.trial_ids
    cluster.wait_event(trial_id, "checkpoint", step=20, run=1)
    cluster.wait_step(trial_id, 25)
    cluster.master.restart(downtime=downtime)

    check_invariants(cluster, Expected(experiment.id, restarts=0, steps=30 + slow))
    runs = cluster.runs(trial_id)
    assert [r["run_id"] for r in runs] == [1], runs
    assert len({e["pid"] for e in cluster.journal(trial_id)}) == 1, "the trial process was replaced"


@pytest.mark.parametrize("obeys", [True, False], ids=["trial-obeys", "trial-ignores-preemption"])
def test_a_master_killed_while_an_experiment_is_stopping_still_ends_it_canceled_with_slots_free(
    chaos_cluster: Callable[..., ChaosCluster], obeys: bool
) -> None:
    cluster = chaos_cluster({"agent-a": 1}, preemption_timeout=4.0)
    if obeys:
        # Held at a gate when the cancel comes, so the experiment stays STOPPING_CANCELED until the
        # test lets the trial go on, see the request, checkpoint and exit.
        actions = [{"report": 10, "every": 0.05}, {"checkpoint": True}, {"wait_file": "go"}, {"report": 400}]
    else:
        actions = [
            {"ignore_preemption": True},
            {"report": 10, "every": 0.05},
            {"checkpoint": True},
            {"report": 100_000, "every": 0.05},
        ]
    experiment = cluster.submit("master-sigkill-stopping", actions)
    (trial_id,) = experiment.trial_ids
    cluster.wait_event(trial_id, "checkpoint", step=10, run=1)
    cluster.verb(experiment.id, "cancel")
    assert cluster.experiment(experiment.id)["state"] == "STOPPING_CANCELED"

    cluster.master.restart(downtime=1)
    assert cluster.experiment(experiment.id)["state"] == "STOPPING_CANCELED"
    restarted = time.monotonic()
    if obeys:
        cluster.open_gate("go")
    # An ignored request is escalated to a kill preemption_timeout after it was made, master
    # restart or not.
    cluster.wait_state(experiment.id, {"CANCELED"}, timeout=cluster.settings.preemption_timeout + 20)
    print(f"CANCELED {time.monotonic() - restarted:.1f}s after the master came back")
    check_invariants(cluster, Expected(experiment.id, state="CANCELED", restarts=0))
    (run,) = cluster.runs(trial_id)
    events = [e["event"] for e in cluster.journal(trial_id)]
    if obeys:
        assert run["exit_code"] == 0 and events[-2:] == ["checkpoint", "preempted"], (run, events)
    else:
        assert run["exit_reason"] == "preemption timeout" and "preempt_seen" in events, (run, events)
