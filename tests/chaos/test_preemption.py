"""Preemption as a contract: pause, an ignored request, a higher priority; none costs a restart."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from chaos_cluster import ChaosCluster
from invariants import Expected, check_invariants

from support import wait_for

pytestmark = pytest.mark.chaos


def test_pausing_and_activating_a_running_trial_5_times_resumes_it_from_each_preemption_checkpoint(
    chaos_cluster: Callable[..., ChaosCluster],
) -> None:
    cluster = chaos_cluster({"agent-a": 1})
    experiment = cluster.submit("pause-activate", [{"report": 150, "every": 0.05}])
    (trial_id,) = experiment.trial_ids
    for run in range(1, 6):
        start = cluster.wait_event(trial_id, "start", run=run, timeout=20)
        cluster.wait_step(trial_id, start["restored_step"] + 5, timeout=20)
        cluster.verb(experiment.id, "pause")
        saved = cluster.wait_event(trial_id, "checkpoint", run=run, reason="preempt", timeout=20)
        # Determined's bound: a pause clears every workload within 20 s.
        wait_for(lambda: not cluster.allocation_processes(), 20, f"run {run} to leave")
        wait_for(lambda: not any(s["allocation_id"] for s in cluster.slots()), 20, "the slot to be free")
        assert cluster.experiment(experiment.id)["state"] == "PAUSED"
        cluster.verb(experiment.id, "activate")
        resumed = cluster.wait_event(trial_id, "start", run=run + 1, timeout=20)
        assert (resumed["restored"], resumed["restored_step"]) == (saved["uuid"], saved["step"])

    check_invariants(cluster, Expected(experiment.id, restarts=0, steps=150))
    runs = cluster.runs(trial_id)
    assert [(r["run_id"], r["exit_code"]) for r in runs] == [(n, 0) for n in range(1, 7)], runs


def test_a_trial_ignoring_preemption_is_killed_after_its_timeout_and_resumes_later(
    chaos_cluster: Callable[..., ChaosCluster],
) -> None:
    cluster = chaos_cluster({"agent-a": 1}, preemption_timeout=4.0)
    experiment = cluster.submit(
        "ignores-preemption",
        [
            {"ignore_preemption": True, "run": 1},
            {"report": 20, "every": 0.05},
            {"checkpoint": True},
            {"report": 10, "every": 0.05},
            {"sleep": 60, "run": 1},  # busy where it cannot look at preemption
            {"report": 10, "every": 0.05},
            {"exit": 3, "run": 2},  # and a failure of its own, which alone uses up a restart
            {"report": 10, "every": 0.05},
        ],
        max_restarts=1,
    )
    (trial_id,) = experiment.trial_ids
    cluster.wait_event(trial_id, "checkpoint", step=20, run=1)
    cluster.wait_step(trial_id, 30)
    paused = time.monotonic()
    cluster.verb(experiment.id, "pause")

    timeout = cluster.settings.preemption_timeout
    wait_for(lambda: cluster.runs(trial_id)[0]["state"] == "TERMINATED", timeout + 15, "run 1 to be killed")
    ended_after = time.monotonic() - paused
    wait_for(lambda: not cluster.allocation_processes(), 10, "run 1's processes to be gone")
    assert cluster.experiment(experiment.id)["state"] == "PAUSED"
    cluster.verb(experiment.id, "activate")
    start = cluster.wait_event(trial_id, "start", run=2, timeout=20)

    check_invariants(cluster, Expected(experiment.id, restarts=1, steps=50))
    assert start["restored_step"] == 20
    runs = [(r["exit_code"], r["exit_reason"]) for r in cluster.runs(trial_id)]
    assert runs[0][1] == "preemption timeout" and runs[1:] == [(3, "exited"), (0, "exited")], runs
    assert timeout - 0.5 < ended_after < timeout + 6, f"killed {ended_after:.1f}s after the pause"


def test_a_higher_priority_experiment_preempts_a_lower_one_which_resumes_and_completes_later(
    chaos_cluster: Callable[..., ChaosCluster],
) -> None:
    cluster = chaos_cluster({"agent-a": 1}, scheduler_preemption=True)
    low = cluster.submit(
        "low-priority",
        [{"report": 20, "every": 0.05}, {"checkpoint": True}, {"report": 60, "every": 0.05}],
        priority=50,
    )
    (low_trial,) = low.trial_ids
    cluster.wait_event(low_trial, "checkpoint", step=20, run=1)
    # Its checkpoint older than the GC grace by the time the preemption checkpoint makes it garbage
    # (test_a_checkpoint_made_garbage_within_the_gc_grace_leaves_no_chunk_behind covers the other case).
    cluster.wait_step(low_trial, 45)
    high = cluster.submit("high-priority", [{"report": 20, "every": 0.05}], priority=10)
    (high_trial,) = high.trial_ids

    saved = cluster.wait_event(low_trial, "checkpoint", run=1, reason="preempt", timeout=20)
    resumed = cluster.wait_event(low_trial, "start", run=2, timeout=60)
    assert (resumed["restored"], resumed["restored_step"]) == (saved["uuid"], saved["step"])
    check_invariants(cluster, Expected(high.id, restarts=0, steps=20), Expected(low.id, restarts=0, steps=80))
    low_runs, (high_run,) = cluster.runs(low_trial), cluster.runs(high_trial)
    assert (low_runs[0]["exit_code"], low_runs[0]["exit_reason"]) == (0, "preempted"), low_runs
    # One slot: the high-priority run fits between the low one's two runs.
    first, second = low_runs[0], low_runs[1]
    assert first["ended_at"] <= high_run["started_at"] <= high_run["ended_at"] <= second["started_at"]
