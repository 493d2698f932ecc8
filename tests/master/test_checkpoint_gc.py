"""Checkpoint GC end to end: a real master, Celery worker, Redis and storage, checked in DB and storage.

Each test module run gets its own database, its own redis-server and its own master process, so
stopping Redis or killing a worker here touches no other test. Checkpoints are written with the
real engine (``CheckpointWriter``) and registered through the allocation routes, as a trial does.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis as redis_lib
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from stalwart.checkpoint import CheckpointWriter, load_state, open_storage, read_manifest
from stalwart.core._errors import CheckpointNotFound
from stalwart_master.db.orm import Agent, Allocation, Checkpoint, GCRequest, Trial
from stalwart_master.jobs.gc import GCBusy, collect
from stalwart_master.services import gc as gc_service
from stalwart_master.settings import get_settings

from support import (
    ManagedProcess,
    drop_database,
    free_port,
    mint_agent_token,
    process_gone,
    recreate_database,
    redis_server_argv,
    spawn,
    start_master,
    start_trial_run,
    start_worker,
    wait_for,
)

pytestmark = pytest.mark.integration

CONFIG = """\
name: gc-{label}
entrypoint: python3 train.py
hyperparameters:
  x: {{type: categorical, vals: [1, 2]}}
searcher: {{name: grid, metric: loss, smaller_is_better: true}}
resources: {{resource_pool: no-agents-here, slots_per_trial: 0}}
checkpoint_storage: {storage}
"""
# Determined's documented example: checkpoint id -> (trial index, validation loss), in step order.
TABLE: dict[int, tuple[int, float | None]] = {
    1: (0, None),
    2: (0, None),
    3: (0, 0.6),
    4: (0, 0.5),
    5: (0, 0.4),
    6: (1, None),
    7: (1, 0.2),
    8: (1, 0.3),
    9: (1, None),
    10: (1, None),
}
# Workers sweep unreferenced chunks older than this. Never 0 while a trial may be saving: a sweep
# would take the chunks (and temp files) of a save that has not committed yet.
GRACE = 2.0
# Every checkpoint shares this array (its chunks dedup across all of them) and adds one of its own.
SHARED = np.arange(50_000, dtype=np.float32)


class Redis:
    """A private redis-server without persistence that a test may stop and start again."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._root = root
        self._process: ManagedProcess | None = None

    def start(self) -> None:
        self._process = spawn(redis_server_argv(self.port), self._root / "redis.log")
        wait_for(self.answers, 30, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self._process is not None:
            pid = self._process.process.pid
            self._process.stop()
            wait_for(lambda: process_gone(pid) and not self.answers(), 30, "redis-server to stop")

    def answers(self) -> bool:
        try:
            return bool(redis_lib.Redis.from_url(self.url, socket_connect_timeout=0.5).ping())
        except redis_lib.RedisError:
            return False

    def flush(self) -> None:
        redis_lib.Redis.from_url(self.url).flushdb()


@dataclass
class Cluster:
    database_url: str
    redis: Redis
    api: httpx.Client
    sessions: sessionmaker[Session]
    root: Path
    env: dict[str, str]
    workers: list[ManagedProcess] = field(default_factory=list)

    def start_worker(self, name: str, **extra_env: str) -> ManagedProcess:
        worker = start_worker(self.root / name, {**self.env, **extra_env})
        self.workers.append(worker)
        return worker

    def agent_token(self, allocation_ids: Iterable[str]) -> str:
        """The token of an agent the allocations are placed on: an agent reports only for its own."""
        agent_id = f"gc-agent-{uuid.uuid4().hex[:8]}"
        with self.sessions.begin() as session:
            # Disabled and disconnected: the scheduler places nothing there and nobody declares it lost.
            session.add(Agent(id=agent_id, resource_pool=agent_id, enabled=False, connected=False))
            session.flush()
            session.execute(
                update(Allocation)
                .where(Allocation.id.in_([uuid.UUID(a) for a in allocation_ids]))
                .values(agent_id=agent_id)
            )
        return mint_agent_token(self.api, agent_id)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, s3_server: Any) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("gc-cluster")
    name = f"stalwart_gc_{os.environ['STALWART_TEST_RUN']}_{os.environ.get('PYTEST_XDIST_WORKER', 'gw0')}"
    database_url = recreate_database(name)
    redis = Redis(root)
    redis.start()
    env = {
        "STALWART_DATABASE_URL": database_url,
        "STALWART_REDIS_URL": redis.url,
        "STALWART_GC_CHUNK_GRACE_SECONDS": str(GRACE),
        "STALWART_GC_REPUBLISH_INTERVAL_SECONDS": "1",
        "STALWART_GC_BUSY_RETRY_SECONDS": "1",
        # The master and its workers touch only storage the operator allows: the tests' temporary
        # directories and the moto server stand for the cluster's NFS and S3.
        "STALWART_STORAGE_SHARED_FS_ROOTS": json.dumps([str(tmp_path_factory.getbasetemp())]),
        "STALWART_STORAGE_ENDPOINT_ALLOWLIST": json.dumps([s3_server.endpoint_url]),
    }
    port = free_port()
    master = start_master(port, root / "master", env)
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    login = api.post(
        "/api/v1/auth/login", json={"username": "admin", "password": os.environ["STALWART_ADMIN_PASSWORD"]}
    )
    api.headers["Authorization"] = f"Bearer {login.json()['token']}"
    found = Cluster(database_url, redis, api, sessionmaker(engine, expire_on_commit=False), root, env)
    # collect() also runs in this process: it must allow the same storage as the worker does.
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            if key.startswith("STALWART_STORAGE_"):
                patch.setenv(key, value)
        get_settings.cache_clear()
        try:
            yield found
        finally:
            get_settings.cache_clear()
            for worker in found.workers:
                worker.stop()
            api.close()
            master.stop()
            redis.stop()
            engine.dispose()
            drop_database(name)
    get_settings.cache_clear()


@pytest.fixture
def cluster_fresh(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with an empty queue and no worker left over from an earlier test."""
    cluster.redis.flush()
    yield cluster
    for worker in cluster.workers:
        worker.stop()
    cluster.workers.clear()


# --- helpers --------------------------------------------------------------------------------------


@dataclass
class Run:
    """An experiment of two trials, each with a running allocation, writing to one storage."""

    cluster: Cluster
    experiment_id: int
    trial_ids: list[int]
    tokens: dict[int, tuple[str, str]]
    storage: dict[str, Any]
    saved: dict[int, str] = field(default_factory=dict)  # table id -> uuid
    own: dict[str, np.ndarray] = field(default_factory=dict)  # uuid -> its own array
    last_write: float = 0.0

    def headers(self, trial_id: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[trial_id][1]}"}

    def validate(self, trial_id: int, steps: int, loss: float) -> None:
        body = {
            "run_id": 1,
            "batch_id": str(uuid.uuid4()),
            "metrics": [{"group": "validation", "steps_completed": steps, "values": {"loss": loss}}],
        }
        response = self.cluster.api.post(
            f"/api/v1/trials/{trial_id}/metrics", json=body, headers=self.headers(trial_id)
        )
        assert response.status_code == 204, response.text

    def checkpoint(self, trial_id: int, steps: int) -> str:
        storage = open_storage(self.storage)
        own = np.random.default_rng(steps * 1000 + trial_id).random(20_000)
        writer = CheckpointWriter(storage, chunk_size=64 * 1024)
        ckpt = writer.save_state({"shared": SHARED, "own": own}, steps_completed=steps)
        writer.close()
        manifest = read_manifest(storage, ckpt)
        storage.close()
        body = {
            "uuid": ckpt,
            "trial_id": trial_id,
            "steps_completed": steps,
            "storage": self.storage,
            "manifest": manifest,
            "metadata": manifest["metadata"],
        }
        response = self.cluster.api.post("/api/v1/checkpoints", json=body, headers=self.headers(trial_id))
        assert response.status_code == 201, response.text
        self.own[ckpt] = own
        self.last_write = time.time()
        return ckpt

    def wait_out_grace(self) -> None:
        """Until the chunks written so far are old enough for a worker's sweep to take them."""
        wait_for(lambda: time.time() > self.last_write + GRACE + 0.2, GRACE + 5, "the chunk grace period")

    def write_table(self) -> None:
        """Determined's table: validation first, then the checkpoint at the same step."""
        for number, (trial_index, loss) in TABLE.items():
            trial_id = self.trial_ids[trial_index]
            steps = 100 * (number - 5 * trial_index)
            if loss is not None:
                self.validate(trial_id, steps, loss)
            self.saved[number] = self.checkpoint(trial_id, steps)

    def end_trials(self) -> None:
        token = self.cluster.agent_token(allocation_id for allocation_id, _ in self.tokens.values())
        for allocation_id, _ in self.tokens.values():
            response = self.cluster.api.post(
                f"/api/v1/allocations/{allocation_id}/state",
                json={"state": "TERMINATED", "exit_code": 0},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 204, response.text
        experiment = self.cluster.api.get(f"/api/v1/experiments/{self.experiment_id}").json()
        assert experiment["state"] == "COMPLETED", experiment["state"]

    def states(self) -> dict[int, str]:
        by_uuid = {uuid.UUID(u): n for n, u in self.saved.items()}
        with self.cluster.sessions() as session:
            rows = session.execute(
                select(Checkpoint.uuid, Checkpoint.state).where(Checkpoint.uuid.in_(by_uuid))
            )
            return {by_uuid[u]: state for u, state in rows}

    def completed(self) -> set[int]:
        return {n for n, state in self.states().items() if state == "COMPLETED"}

    def requests(self) -> list[GCRequest]:
        with self.cluster.sessions() as session:
            return list(
                session.scalars(
                    select(GCRequest)
                    .where(GCRequest.experiment_id == self.experiment_id)
                    .order_by(GCRequest.id)
                )
            )

    def wait_collected(self, timeout: float = 90) -> None:
        def done() -> bool:
            requests = self.requests()
            return bool(requests) and all(r.done_at is not None for r in requests)

        wait_for(done, timeout, f"GC of experiment {self.experiment_id}", interval=0.2)

    def latest(self) -> dict[int, uuid.UUID | None]:
        with self.cluster.sessions() as session:
            rows = session.execute(
                select(Trial.id, Trial.latest_checkpoint).where(Trial.id.in_(self.trial_ids))
            )
            return {trial_id: latest for trial_id, latest in rows}

    def uuid_of(self, number: int) -> uuid.UUID:
        return uuid.UUID(self.saved[number])


def new_run(cluster: Cluster, storage: dict[str, Any], policy: tuple[int, int, int]) -> Run:
    storage = {
        **storage,
        "save_experiment_best": policy[0],
        "save_trial_best": policy[1],
        "save_trial_latest": policy[2],
    }
    config = CONFIG.format(label=uuid.uuid4().hex[:8], storage=json.dumps(storage))
    # Paused: the scheduler leaves its trials alone; the test plays the agent.
    created = cluster.api.post("/api/v1/experiments", json={"config": config, "paused": True})
    assert created.status_code == 201, created.text
    experiment_id = created.json()["id"]
    trials = [t["id"] for t in cluster.api.get(f"/api/v1/experiments/{experiment_id}/trials").json()]
    assert len(trials) == 2
    tokens = {t: start_trial_run(cluster.database_url, t) for t in trials}
    # The storage as given, credentials included: the answer's copy has them masked.
    return Run(cluster, experiment_id, trials, tokens, storage)


def assert_storage_agrees(run: Run, *, exact_chunks: bool = True) -> None:
    """Manifests present == COMPLETED rows; chunks present == those the manifests reference.

    ``exact_chunks=False`` while unreferenced chunks may still be inside the grace period.
    """
    storage = open_storage(run.storage)
    try:
        manifests = {
            obj.key.removeprefix("manifests/").removesuffix(".json") for obj in storage.list("manifests/")
        }
        assert manifests == {run.saved[n] for n in run.completed()}
        referenced: set[str] = set()
        for ckpt in manifests:
            manifest = read_manifest(storage, ckpt)
            referenced.update(c["digest"] for f in manifest["files"] for c in f["chunks"])
            state = load_state(storage, manifest)  # every chunk of a kept checkpoint is there and valid
            assert np.array_equal(state["shared"], SHARED) and np.array_equal(state["own"], run.own[ckpt])
        chunks = {obj.key.rpartition("/")[2] for obj in storage.list("chunks/")}
        assert chunks == referenced if exact_chunks else chunks >= referenced
        for number, state_name in run.states().items():
            if state_name == "DELETED":
                with pytest.raises(CheckpointNotFound):
                    read_manifest(storage, run.saved[number])
    finally:
        storage.close()


def shared_fs(tmp_path: Path) -> dict[str, Any]:
    return {"type": "shared_fs", "host_path": str(tmp_path / "checkpoints")}


def collect_now(run: Run) -> None:
    """Do the pending requests in this process (no worker needed); a test's setup step."""
    for request in run.requests():
        if request.done_at is None:
            collect(run.cluster.sessions, request.id, grace_seconds=0)


# --- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["shared_fs", "s3"])
def test_gc_keeps_determineds_table_set_and_storage_agrees_with_the_database(
    cluster_fresh: Cluster, tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    if kind == "s3":
        s3 = request.getfixturevalue("s3_server")
        storage = s3.storage_config(s3.new_bucket(), prefix="team/gc")
    else:
        storage = shared_fs(tmp_path)
    cluster_fresh.start_worker("worker")
    run = new_run(cluster_fresh, storage, (2, 1, 1))
    run.write_table()
    # GC ran after each registration while the trials trained: (2, 1, 1) already holds.
    run.wait_collected()
    assert run.completed() == {5, 7, 8, 10}
    assert_storage_agrees(run, exact_chunks=False)

    run.end_trials()
    run.wait_collected()
    states = run.states()
    assert {n for n, s in states.items() if s == "COMPLETED"} == {5, 7, 8, 10}
    assert {n for n, s in states.items() if s == "DELETED"} == {1, 2, 3, 4, 6, 9}
    assert run.latest() == {run.trial_ids[0]: run.uuid_of(5), run.trial_ids[1]: run.uuid_of(10)}
    assert_storage_agrees(run, exact_chunks=False)
    shown = cluster_fresh.api.get(f"/api/v1/checkpoints/{run.saved[1]}").json()
    assert shown["state"] == "DELETED" and shown["deleted_at"] is not None
    kept = cluster_fresh.api.get(f"/api/v1/checkpoints/{run.saved[7]}").json()
    assert (kept["state"], kept["searcher_metric"], kept["experiment_id"]) == (
        "COMPLETED",
        0.2,
        run.experiment_id,
    )
    assert kept["stored_size"] > 0 and kept["deleted_at"] is None and kept["model_versions"] == []

    # A new policy applies at once to the finished experiment, and GET shows it.
    run.wait_out_grace()
    patched = cluster_fresh.api.patch(
        f"/api/v1/experiments/{run.experiment_id}/gc-policy",
        json={"save_experiment_best": 1, "save_trial_best": 0, "save_trial_latest": 0},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["config"]["checkpoint_storage"]["save_experiment_best"] == 1
    policy = cluster_fresh.api.get(f"/api/v1/experiments/{run.experiment_id}").json()["config"][
        "checkpoint_storage"
    ]
    assert (policy["save_experiment_best"], policy["save_trial_best"], policy["save_trial_latest"]) == (
        1,
        0,
        0,
    )
    run.wait_collected()
    assert run.completed() == {7}
    assert run.latest() == {run.trial_ids[0]: None, run.trial_ids[1]: run.uuid_of(7)}
    assert_storage_agrees(run)


def test_a_running_trial_keeps_its_newest_checkpoint_until_it_ends(
    cluster_fresh: Cluster, tmp_path: Path
) -> None:
    cluster_fresh.start_worker("worker")
    run = new_run(cluster_fresh, shared_fs(tmp_path), (0, 0, 0))
    first = run.trial_ids[0]
    for steps in (100, 200, 300):
        run.saved[steps] = run.checkpoint(first, steps)
    run.wait_collected()
    assert run.completed() == {300}
    assert run.latest()[first] == run.uuid_of(300)
    assert_storage_agrees(run, exact_chunks=False)
    run.wait_out_grace()
    run.end_trials()
    run.wait_collected()
    assert run.completed() == set()
    assert run.latest()[first] is None
    assert_storage_agrees(run)


def test_two_deliveries_of_one_request_act_once(cluster_fresh: Cluster, tmp_path: Path) -> None:
    run = new_run(cluster_fresh, shared_fs(tmp_path), (2, 1, 1))
    run.write_table()  # no worker: every request waits
    pending = [r.id for r in run.requests() if r.done_at is None]
    assert pending
    barrier = threading.Barrier(2)
    results: list[object] = []

    def deliver() -> None:
        barrier.wait()
        try:
            results.append(collect(cluster_fresh.sessions, pending[-1], grace_seconds=0, pause_seconds=2))
        except GCBusy as exc:
            results.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    outcomes = [r for r in results if not isinstance(r, GCBusy)]
    assert len(results) == 2 and len(outcomes) == 1, results
    (outcome,) = outcomes
    assert sorted(outcome.request_ids) == sorted(pending)  # type: ignore[attr-defined]
    assert {u.int for u in outcome.deleted} == {run.uuid_of(n).int for n in (1, 2, 3, 4, 6, 9)}  # type: ignore[attr-defined]
    # The busy one, delivered again later, finds the request done and does nothing.
    assert collect(cluster_fresh.sessions, pending[-1], grace_seconds=0) is None
    assert all(r.done_at is not None and r.attempts == 1 for r in run.requests())
    assert run.completed() == {5, 7, 8, 10}
    assert_storage_agrees(run)


def _one_request_queued(run: Run, body: dict[str, int]) -> GCRequest:
    """Finish every earlier request here, empty the queue, then make exactly one new request."""
    collect_now(run)
    run.cluster.redis.flush()
    response = run.cluster.api.patch(f"/api/v1/experiments/{run.experiment_id}/gc-policy", json=body)
    assert response.status_code == 200, response.text
    (request,) = [r for r in run.requests() if r.done_at is None]
    return request


def test_a_worker_killed_mid_gc_is_finished_by_a_fresh_worker_on_redelivery(
    cluster_fresh: Cluster, tmp_path: Path
) -> None:
    run = new_run(cluster_fresh, shared_fs(tmp_path), (2, 1, 1))
    run.write_table()
    request = _one_request_queued(
        run, {"save_experiment_best": 0, "save_trial_best": 0, "save_trial_latest": 1}
    )
    storage = open_storage(run.storage)
    doomed = [run.saved[n] for n in (7, 8)]  # the (0, 0, 1) policy deletes these two of {5, 7, 8, 10}
    run.wait_out_grace()

    # The first worker stops between deleting manifests and marking the rows: kill it there.
    first = cluster_fresh.start_worker("worker-killed", STALWART_GC_TEST_PAUSE_SECONDS="120")
    wait_for(lambda: not any(storage.exists(f"manifests/{u}.json") for u in doomed), 60, "manifests deleted")
    assert run.completed() == {5, 7, 8, 10}  # storage is ahead of the database, never behind
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(10)
    # A fresh worker gets the unacknowledged message back once its visibility timeout has passed.
    cluster_fresh.start_worker("worker-fresh", STALWART_REDIS_VISIBILITY_TIMEOUT_SECONDS="2")
    run.wait_collected()
    (redone,) = [r for r in run.requests() if r.id == request.id]
    assert redone.attempts == 2 and redone.error is None
    assert run.completed() == {5, 10}
    assert_storage_agrees(run)
    storage.close()


def test_with_redis_down_the_request_is_kept_and_runs_once_when_redis_returns(
    cluster_fresh: Cluster, tmp_path: Path
) -> None:
    run = new_run(cluster_fresh, shared_fs(tmp_path), (2, 1, 1))
    run.write_table()
    collect_now(run)
    cluster_fresh.start_worker("worker")
    run.wait_out_grace()
    cluster_fresh.redis.stop()
    try:
        started = time.monotonic()
        response = cluster_fresh.api.patch(
            f"/api/v1/experiments/{run.experiment_id}/gc-policy", json={"save_experiment_best": 1}
        )
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 10
        # The API keeps serving reads and writes that need no queue.
        assert cluster_fresh.api.get(f"/api/v1/experiments/{run.experiment_id}").status_code == 200
        assert (
            cluster_fresh.api.get(f"/api/v1/experiments/{run.experiment_id}/checkpoints").status_code == 200
        )
        (request,) = [r for r in run.requests() if r.done_at is None]
        assert request.published_at is None
        deadline = time.monotonic() + 3  # nothing can run it meanwhile: it stays recorded, undone
        while time.monotonic() < deadline:
            assert [r.id for r in run.requests() if r.done_at is None] == [request.id]
            time.sleep(0.2)
    finally:
        cluster_fresh.redis.start()
    run.wait_collected(timeout=120)
    (done,) = [r for r in run.requests() if r.id == request.id]
    assert done.published_at is not None and done.attempts == 1
    assert run.completed() == {5, 7, 10}  # (1, 1, 1): 7 is the experiment's best, 10 the newest of its trial
    assert_storage_agrees(run)


# --- routes ---------------------------------------------------------------------------------------


def test_checkpoint_routes_refuse_what_they_must(cluster_fresh: Cluster, tmp_path: Path) -> None:
    api = cluster_fresh.api
    run = new_run(cluster_fresh, shared_fs(tmp_path), (0, 1, 1))
    first, second = run.trial_ids
    for steps in (100, 200, 300):
        run.saved[steps] = run.checkpoint(first, steps)
    run.saved[1] = run.checkpoint(second, 100)
    collect_now(run)
    assert run.completed() == {300, 1}

    missing = uuid.uuid4()
    gone = api.delete(f"/api/v1/checkpoints/{missing}")
    assert gone.status_code == 404 and gone.headers["content-type"] == "application/problem+json"
    assert str(missing) in gone.json()["detail"]
    assert api.delete("/api/v1/checkpoints/not-a-uuid").status_code == 422

    # A model version protects its checkpoint from deletion and from any policy.
    name = f"gc-model-{uuid.uuid4().hex[:8]}"
    assert api.post("/api/v1/models", json={"name": name}).status_code == 201
    registered = api.post(f"/api/v1/models/{name}/versions", json={"checkpoint_uuid": run.saved[300]})
    assert registered.status_code == 201, registered.text
    refused = api.delete(f"/api/v1/checkpoints/{run.saved[300]}")
    assert refused.status_code == 409 and f"{name}:1" in refused.json()["detail"]
    assert api.get(f"/api/v1/checkpoints/{run.saved[300]}").json()["model_versions"] == [f"{name}:1"]

    for body, path in (
        ({"save_trial_best": -1}, "body.save_trial_best"),
        ({"save_experiment_best": "many"}, "body.save_experiment_best"),
        ({"save_everything": 1}, "body.save_everything"),
    ):
        bad = api.patch(f"/api/v1/experiments/{run.experiment_id}/gc-policy", json=body)
        assert bad.status_code == 422 and [e["path"] for e in bad.json()["errors"]] == [path], bad.text
    assert api.patch("/api/v1/experiments/2000000000/gc-policy", json={}).status_code == 404
    zero = api.patch(
        f"/api/v1/experiments/{run.experiment_id}/gc-policy",
        json={"save_experiment_best": 0, "save_trial_best": 0, "save_trial_latest": 0},
    )
    assert zero.status_code == 200
    collect_now(run)
    assert run.completed() == {300, 1}  # both trials still run: their newest stay; 300 is registered too

    # An explicit delete goes through GC; repeating it once DELETED is a harmless 202.
    accepted = api.delete(f"/api/v1/checkpoints/{run.saved[1]}")
    assert accepted.status_code == 202 and accepted.json()["state"] == "COMPLETED"
    collect_now(run)
    assert run.states()[1] == "DELETED" and run.latest()[second] is None
    count = len(run.requests())
    again = api.delete(f"/api/v1/checkpoints/{run.saved[1]}")
    assert again.status_code == 202 and again.json()["state"] == "DELETED"
    assert len(run.requests()) == count
    assert_storage_agrees(run)


def test_a_corrupt_report_moves_the_trial_back_to_its_newest_good_checkpoint(
    cluster_fresh: Cluster, tmp_path: Path
) -> None:
    api = cluster_fresh.api
    run = new_run(cluster_fresh, shared_fs(tmp_path), (0, 0, 3))
    first, second = run.trial_ids
    for steps in (100, 200, 300):
        run.saved[steps] = run.checkpoint(first, steps)
    allocation_id, _ = run.tokens[first]

    def report(number: int, trial: int = first, allocation: str = allocation_id) -> httpx.Response:
        return api.post(
            f"/api/v1/allocations/{allocation}/checkpoints/{run.saved[number]}/corrupt",
            json={"reason": "chunk 3 of state/own: digest mismatch"},
            headers=run.headers(trial),
        )

    answered = report(300)
    assert answered.status_code == 200, answered.text
    assert answered.json() == {"latest_checkpoint": run.saved[200]}
    shown = api.get(f"/api/v1/checkpoints/{run.saved[300]}").json()
    assert shown["state"] == "CORRUPTED" and "digest mismatch" in shown["corrupt_reason"]
    assert run.latest()[first] == run.uuid_of(200)
    assert report(300).json() == {"latest_checkpoint": run.saved[200]}  # repeating it is harmless
    assert report(200).json() == {"latest_checkpoint": run.saved[100]}
    assert report(100).json() == {"latest_checkpoint": None}
    assert run.latest()[first] is None

    # Only the trial's own allocation may report, and only about its own checkpoints.
    other_allocation, _ = run.tokens[second]
    assert report(100, trial=second).status_code == 403  # its token names another allocation
    assert report(100, trial=second, allocation=other_allocation).status_code == 403
    missing = api.post(
        f"/api/v1/allocations/{allocation_id}/checkpoints/{uuid.uuid4()}/corrupt",
        json={"reason": "x"},
        headers=run.headers(first),
    )
    assert missing.status_code == 404
    assert (
        api.post(
            f"/api/v1/allocations/{allocation_id}/checkpoints/{run.saved[100]}/corrupt", json={"reason": "x"}
        ).status_code
        == 403
    )  # a user token is not an allocation token
    empty = api.post(
        f"/api/v1/allocations/{allocation_id}/checkpoints/{run.saved[100]}/corrupt",
        json={"reason": ""},
        headers=run.headers(first),
    )
    assert empty.status_code == 422 and empty.json()["errors"][0]["path"] == "body.reason"
    # CORRUPTED checkpoints are left to the user: policy GC only ever deletes COMPLETED ones.
    collect_now(run)
    assert set(run.states().values()) == {"CORRUPTED"}


def test_deleting_an_experiment_deletes_its_checkpoints_from_storage_first(
    cluster_fresh: Cluster, tmp_path: Path
) -> None:
    cluster_fresh.start_worker("worker")
    run = new_run(cluster_fresh, shared_fs(tmp_path), (0, 1, 2))
    first, second = run.trial_ids
    for steps in (100, 200):
        run.saved[steps] = run.checkpoint(first, steps)
    run.saved[1] = run.checkpoint(second, 100)
    run.end_trials()
    run.wait_collected()
    assert run.completed() == {100, 200, 1}
    run.wait_out_grace()
    assert cluster_fresh.api.delete(f"/api/v1/experiments/{run.experiment_id}").status_code == 202
    wait_for(
        lambda: cluster_fresh.api.get(f"/api/v1/experiments/{run.experiment_id}").status_code == 404,
        60,
        "the deletion job",
    )
    storage = open_storage(run.storage)
    assert list(storage.list("manifests/")) == [] and list(storage.list("chunks/")) == []
    storage.close()


def test_done_requests_are_pruned_and_pending_ones_kept(cluster_fresh: Cluster, tmp_path: Path) -> None:
    run = new_run(cluster_fresh, shared_fs(tmp_path), (0, 1, 1))
    run.saved[100] = run.checkpoint(run.trial_ids[0], 100)
    collect_now(run)
    run.saved[200] = run.checkpoint(run.trial_ids[0], 200)
    (pending,) = [r.id for r in run.requests() if r.done_at is None]
    with cluster_fresh.sessions.begin() as session:
        assert gc_service.prune_requests(session, older_than=dt.timedelta(0)) >= 1
    assert [r.id for r in run.requests()] == [pending]
