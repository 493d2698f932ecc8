"""PostgreSQL restarts and Redis outages: the API answers, work waits, nothing is lost or done twice."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import httpx
import pytest
from chaos_cluster import ChaosCluster
from invariants import Expected, check_invariants, to_epoch

from support import wait_for

pytestmark = pytest.mark.chaos


def test_a_postgresql_restart_during_training_and_metric_ingestion_loses_nothing(
    chaos_cluster: Callable[..., ChaosCluster],
) -> None:
    # The outage must not look like a lost agent: heartbeats cannot be recorded while it lasts.
    cluster = chaos_cluster({"agent-a": 1}, embedded_postgres=True, reconnect_wait=15.0)
    experiment = cluster.submit(
        "postgres-restart",
        [
            {"report": 20, "every": 0.02},
            {"checkpoint": True},
            {"report": 400, "every": 0.02},  # a metric row every 20 ms while the database is away
            {"checkpoint": True},
            {"report": 10, "every": 0.02},
        ],
    )
    (trial_id,) = experiment.trial_ids
    cluster.wait_event(trial_id, "checkpoint", step=20, run=1)
    cluster.wait_step(trial_id, 40)
    cluster.postgres.stop()
    # While it is away, requests that need it get 503 with a retry hint, never a 500.
    answers = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TimeoutException):
            answers.append(cluster.api.http.get(f"/api/v1/experiments/{experiment.id}", timeout=10))
        time.sleep(0.5)
    cluster.postgres.start()
    back = time.monotonic()
    path = f"/api/v1/experiments/{experiment.id}"
    wait_for(
        lambda: cluster.api.request("GET", path, retry_for=0).status_code == 200,
        10,
        "the API to answer again within 10 s of PostgreSQL returning",
        interval=0.2,
    )
    print(f"API answered again {time.monotonic() - back:.1f}s after PostgreSQL returned")

    check_invariants(cluster, Expected(experiment.id, restarts=0, steps=430))
    assert [r["run_id"] for r in cluster.runs(trial_id)] == [1]
    statuses = sorted({a.status_code for a in answers})
    assert statuses == [503], f"answers while PostgreSQL was down: {statuses}"
    missing = [a.headers for a in answers if not a.headers.get("Retry-After")]
    assert not missing, f"{len(missing)} of {len(answers)} 503 answers lack Retry-After: {dict(missing[0])}"


def test_with_redis_down_for_30s_due_gc_waits_and_runs_once_when_it_returns(
    chaos_cluster: Callable[..., ChaosCluster],
) -> None:
    cluster = chaos_cluster({"agent-a": 1})
    cluster.redis.stop()
    stopped = time.monotonic()
    experiment = cluster.submit(
        "redis-down",
        [
            {"report": 10, "every": 0.02},
            {"checkpoint": True},
            {"report": 10, "every": 0.02},
            {"checkpoint": True},
            {"report": 10, "every": 0.02},
            {"checkpoint": True},
            {"report": 5, "every": 0.02},
        ],
    )
    # The trial trains, checkpoints and ends while Redis is away: the API never needed it.
    cluster.wait_state(experiment.id, {"COMPLETED"}, timeout=30)
    pending = cluster.sql("SELECT id FROM gc_requests WHERE experiment_id = %s", experiment.id)
    assert pending, "no GC was due"
    while time.monotonic() < stopped + 30:  # the outage itself: GC stays due, recorded, undone
        assert not cluster.sql(
            "SELECT id FROM gc_requests WHERE experiment_id = %s AND done_at IS NOT NULL", experiment.id
        )
        time.sleep(0.5)
    cluster.redis.start()
    returned = time.time()

    check_invariants(cluster, Expected(experiment.id, restarts=0, steps=35))
    requests = cluster.sql(
        "SELECT id, attempts, published_at, done_at, error FROM gc_requests WHERE experiment_id = %s",
        experiment.id,
    )
    assert all(attempts == 1 and error is None for _, attempts, _, _, error in requests), requests
    assert all(to_epoch(done) >= returned - 0.5 for _, _, _, done, _ in requests), requests
    kept = {c["steps_completed"]: c["state"] for c in cluster.checkpoints(experiment.id)}
    # The default policy (best 1, latest 1): only the newest survives, none has a validation metric.
    assert kept == {10: "DELETED", 20: "DELETED", 30: "COMPLETED"}, kept


def test_a_celery_worker_killed_in_the_middle_of_gc_is_finished_by_a_fresh_worker(
    chaos_cluster: Callable[..., ChaosCluster],
) -> None:
    # An unacknowledged task comes back 2 s after its worker died (3600 s by default).
    cluster = chaos_cluster({"agent-a": 1}, env={"STALWART_REDIS_VISIBILITY_TIMEOUT_SECONDS": "2"})
    # This worker stops for a minute between deleting manifests and marking their checkpoints.
    cluster.worker.env["STALWART_GC_TEST_PAUSE_SECONDS"] = "60"
    cluster.worker.restart()
    offset = cluster.worker.log_size()
    experiment = cluster.submit(
        "worker-sigkill",
        [
            {"report": 10, "every": 0.02},
            {"checkpoint": True},
            {"sleep": 1.5},  # older than the GC grace when the next checkpoint makes it garbage
            {"report": 10, "every": 0.02},
            {"checkpoint": True},
            {"report": 5, "every": 0.02},
        ],
    )
    wait_for(lambda: "GC pausing" in cluster.worker.log_since(offset), 60, "a GC run to stop mid-way")
    cluster.worker.kill()
    del cluster.worker.env["STALWART_GC_TEST_PAUSE_SECONDS"]
    cluster.worker.start()

    check_invariants(cluster, Expected(experiment.id, restarts=0, steps=25))
    attempts = [
        a for (a,) in cluster.sql("SELECT attempts FROM gc_requests WHERE experiment_id = %s", experiment.id)
    ]
    assert max(attempts) == 2, attempts  # the interrupted one, delivered again; the others once
    kept = {c["steps_completed"]: c["state"] for c in cluster.checkpoints(experiment.id)}
    assert kept == {10: "DELETED", 20: "COMPLETED"}, kept


def test_a_checkpoint_made_garbage_within_the_gc_grace_leaves_no_chunk_behind(
    chaos_cluster: Callable[..., ChaosCluster],
) -> None:
    """I4's corner: the first checkpoint becomes garbage while its chunks are younger than the GC
    grace, so that GC's sweep keeps them; the GC at the trial's end, well after the grace, deletes
    no checkpoint and so sweeps nothing either."""
    cluster = chaos_cluster({"agent-a": 1})
    experiment = cluster.submit(
        "young-garbage",
        [
            {"report": 5, "every": 0.02},
            {"checkpoint": True},
            {"report": 1, "every": 0.02},
            {"checkpoint": True},  # the default policy now deletes the first one at once
            {"sleep": 3},
            {"report": 5, "every": 0.02},
        ],
    )
    check_invariants(cluster, Expected(experiment.id, restarts=0, steps=11))
