"""The trial's own process fails: restarts from the latest checkpoint, within ``max_restarts``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from chaos_cluster import ChaosCluster
from invariants import Expected, check_invariants

pytestmark = pytest.mark.chaos


def test_a_sigkilled_trial_process_resumes_from_its_latest_checkpoint(
    chaos_cluster: Callable[..., ChaosCluster],
) -> None:
    cluster = chaos_cluster({"agent-a": 1})
    experiment = cluster.submit(
        "trial-sigkill",
        [
            {"write_mb": 4},  # checkpoints of several chunks, each verified at the end
            {"report": 20, "every": 0.05},
            {"checkpoint": True},
            {"report": 20, "every": 0.1},
            {"checkpoint": True},
            {"report": 10, "every": 0.05},
        ],
        max_restarts=3,
    )
    (trial_id,) = experiment.trial_ids
    cluster.wait_event(trial_id, "checkpoint", step=20, run=1)
    cluster.wait_step(trial_id, 25)
    (victim,) = cluster.trial_processes(trial_id)
    victim.kill()  # SIGKILL, as the kernel's OOM killer would: a failure of the user's code

    start = cluster.wait_event(trial_id, "start", run=2)
    assert start["restored_step"] == 20
    check_invariants(cluster, Expected(experiment.id, restarts=1, steps=50))
    runs = cluster.runs(trial_id)
    assert [r["run_id"] for r in runs] == [1, 2]
    # The runner reports a signal death as 128 + 9; nobody asked for it, so it is the code's failure.
    assert (runs[0]["exit_code"], runs[0]["exit_reason"]) == (137, "exited"), runs[0]
    rows = cluster.api.get(f"/api/v1/trials/{trial_id}/metrics", params={"include_archived": "true"})
    reached = max(r["steps_completed"] for r in rows["items"] if r["run_id"] == 1)
    print(f"lost work: {reached - start['restored_step']} steps (run 1 reached {reached})")


def test_max_restarts_2_gives_an_always_failing_trial_exactly_3_runs_then_error(
    chaos_cluster: Callable[..., ChaosCluster],
) -> None:
    cluster = chaos_cluster({"agent-a": 1})
    experiment = cluster.submit("always-fails", [{"report": 3, "every": 0.02}, {"exit": 3}], max_restarts=2)
    (trial_id,) = experiment.trial_ids
    # The counter counts user-code failures: 3 (Determined's shows the 2 restarts it made instead).
    check_invariants(cluster, Expected(experiment.id, state="ERROR", restarts=3))
    runs = cluster.runs(trial_id)
    assert [(r["run_id"], r["exit_code"]) for r in runs] == [(1, 3), (2, 3), (3, 3)]
    assert [e["run"] for e in cluster.journal(trial_id) if e["event"] == "exit"] == [1, 2, 3]
    trial = cluster.trial(trial_id)
    assert trial["state"] == "ERROR" and "3" in trial["end_reason"]
