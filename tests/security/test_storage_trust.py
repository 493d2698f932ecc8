"""The master owns storage decisions, and secrets are never shown (security findings 4 and 5).

A real master and Celery worker with their own database and Redis, configured as an operator
would: allowed shared_fs roots, an S3 endpoint allowlist holding only the moto server, and two
named storages whose credentials live only in the master's environment. A canary directory and a
canary HTTP server stand for what a trial (or a tampered config) might point the master at: every
test ends by checking that neither was touched.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis as redis_lib
import yaml
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from stalwart._masking import MASK, mask_config, mask_yaml_text
from stalwart.checkpoint import CheckpointWriter, open_storage, read_manifest
from stalwart.cli.main import app as cli_app
from stalwart_master.db.orm import Checkpoint, Experiment, GCRequest
from stalwart_master.errors import Invalid
from stalwart_master.services import storage as storage_service
from stalwart_master.settings import Settings, StorageSettings

from support import (
    drop_database,
    free_port,
    recreate_database,
    redis_server_argv,
    spawn,
    start_master,
    start_trial_run,
    start_worker,
    wait_for,
)

CONFIG = """\
name: trust-{label}
entrypoint: python3 train.py
searcher: {{name: single, metric: loss}}
resources: {{resource_pool: no-agents-here, slots_per_trial: 0}}
checkpoint_storage: {storage}
"""
NAMED_SECRET = "named-s3-secret-" + uuid.uuid4().hex
NAMED_ACCESS = "named-s3-access-" + uuid.uuid4().hex
LONG_AGO = time.time() - 7 * 24 * 3600


# --- the canaries ---------------------------------------------------------------------------------


class Canary(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that counts every request it gets (any method) and answers 500."""

    requests: list[str]


class _CountingHandler(BaseHTTPRequestHandler):
    def _count(self) -> None:
        self.server.requests.append(f"{self.command} {self.path}")  # type: ignore[attr-defined]
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._count()

    def do_PUT(self) -> None:
        self._count()

    def do_POST(self) -> None:
        self._count()

    def do_DELETE(self) -> None:
        self._count()

    def do_HEAD(self) -> None:
        self._count()

    def log_message(self, *args: Any) -> None:
        pass


def canary_dir(root: Path, manifest_uuid: str) -> Path:
    """A directory laid out like a chunk store, every file old: a sweep or a manifest deletion that
    reached it would delete some of them."""
    files = {
        "canary.txt": b"must survive",
        f"manifests/{manifest_uuid}.json": b"{}",
        f"chunks/ab/{'ab' * 32}": b"unreferenced chunk",
        "shards/leftover/rank-1.json": b"{}",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (LONG_AGO, LONG_AGO))
    return root


def canary_intact(root: Path) -> bool:
    return sum(1 for p in root.rglob("*") if p.is_file()) == 4 and (root / "canary.txt").is_file()


# --- the cluster ----------------------------------------------------------------------------------


@dataclass
class Cluster:
    database_url: str
    api: httpx.Client
    sessions: sessionmaker[Session]
    allowed: Path
    canary: Canary
    s3: Any
    named_bucket: str
    admin_token: str

    @property
    def canary_url(self) -> str:
        return f"http://127.0.0.1:{self.canary.server_address[1]}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, s3_server: Any) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("storage-trust")
    name = f"stalwart_trust_{os.environ['STALWART_TEST_RUN']}_{os.environ.get('PYTEST_XDIST_WORKER', 'gw0')}"
    database_url = recreate_database(name)
    redis_port = free_port()
    redis = spawn(redis_server_argv(redis_port), root / "redis.log")
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    wait_for(lambda: _redis_answers(redis_url), 30, "the module's redis-server")
    canary = Canary(("127.0.0.1", 0), _CountingHandler)
    canary.requests = []
    threading.Thread(target=canary.serve_forever, daemon=True).start()
    allowed = root / "allowed"
    allowed.mkdir()
    named_bucket = s3_server.new_bucket()
    named = {
        "team-s3": {
            "type": "s3",
            "bucket": named_bucket,
            "prefix": "team",
            "endpoint_url": s3_server.endpoint_url,
            "access_key": NAMED_ACCESS,
            "secret_key": NAMED_SECRET,
        },
        # The operator's own directory, outside the roots users may name: named, it is allowed.
        "team-fs": {"type": "shared_fs", "host_path": str(root / "operator-fs")},
    }
    env = {
        "STALWART_DATABASE_URL": database_url,
        "STALWART_REDIS_URL": redis_url,
        "STALWART_GC_CHUNK_GRACE_SECONDS": "0",
        "STALWART_GC_REPUBLISH_INTERVAL_SECONDS": "1",
        "STALWART_STORAGE_SHARED_FS_ROOTS": json.dumps([str(allowed)]),
        "STALWART_STORAGE_ENDPOINT_ALLOWLIST": json.dumps([s3_server.endpoint_url]),
        "STALWART_STORAGE_NAMED": json.dumps(named),
    }
    master = start_master(free_port_for := free_port(), root / "master", env)
    worker = start_worker(root / "worker", env)
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    api = httpx.Client(base_url=f"http://127.0.0.1:{free_port_for}", timeout=30)
    login = api.post(
        "/api/v1/auth/login", json={"username": "admin", "password": os.environ["STALWART_ADMIN_PASSWORD"]}
    )
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    api.headers["Authorization"] = f"Bearer {token}"
    try:
        yield Cluster(
            database_url,
            api,
            sessionmaker(engine, expire_on_commit=False),
            allowed,
            canary,
            s3_server,
            named_bucket,
            token,
        )
    finally:
        api.close()
        worker.stop()
        master.stop()
        canary.shutdown()
        redis.stop()
        engine.dispose()
        drop_database(name)


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis_lib.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis_lib.RedisError:
        return False


@dataclass
class Run:
    """An experiment's one trial with a RUNNING allocation, as a trial sees it."""

    cluster: Cluster
    experiment_id: int
    trial_id: int
    allocation_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def info_storage(self) -> dict[str, Any]:
        """The checkpoint_storage the master hands this run (credentials of a named storage too)."""
        response = self.cluster.api.get(
            f"/api/v1/allocations/{self.allocation_id}/info", headers=self.headers
        )
        assert response.status_code == 200, response.text
        storage: dict[str, Any] = response.json()["checkpoint_storage"]
        return storage

    def write(self, storage: dict[str, Any], steps: int) -> tuple[str, dict[str, Any]]:
        backend = open_storage(storage)
        try:
            writer = CheckpointWriter(backend, chunk_size=64 * 1024)
            ckpt = writer.save_state({"w": np.full(1000, steps, dtype=np.float32)}, steps_completed=steps)
            writer.close()
            return ckpt, read_manifest(backend, ckpt)
        finally:
            backend.close()

    def register(self, ckpt: str, manifest: dict[str, Any], claimed: dict[str, Any]) -> httpx.Response:
        body = {
            "uuid": ckpt,
            "trial_id": self.trial_id,
            "steps_completed": manifest["steps_completed"],
            "storage": claimed,
            "manifest": manifest,
            "metadata": manifest["metadata"],
        }
        return self.cluster.api.post(
            f"/api/v1/allocations/{self.allocation_id}/checkpoints", json=body, headers=self.headers
        )

    def save(self, steps: int) -> str:
        """Write to the storage of the trial info and register there, as the harness does."""
        storage = self.info_storage()
        ckpt, manifest = self.write(storage, steps)
        response = self.register(ckpt, manifest, storage)
        assert response.status_code == 201, response.text
        return ckpt

    def requests(self) -> list[GCRequest]:
        with self.cluster.sessions() as session:
            query = select(GCRequest).where(GCRequest.experiment_id == self.experiment_id)
            return list(session.scalars(query.order_by(GCRequest.id)))

    def wait_collected(self) -> list[GCRequest]:
        def done() -> bool:
            found = self.requests()
            return bool(found) and all(r.done_at is not None for r in found)

        wait_for(done, 90, f"GC of experiment {self.experiment_id}", interval=0.2)
        return self.requests()

    def state(self, ckpt: str) -> str | None:
        with self.cluster.sessions() as session:
            row = session.get(Checkpoint, uuid.UUID(ckpt))
            return row.state if row is not None else None

    def insert_row(self, storage: dict[str, Any], steps: int, ckpt: str | None = None) -> str:
        """A checkpoint row written straight into the database, bypassing every check."""
        ckpt = ckpt or str(uuid.uuid4())
        with self.cluster.sessions.begin() as session:
            session.add(
                Checkpoint(
                    uuid=uuid.UUID(ckpt),
                    trial_id=self.trial_id,
                    steps_completed=steps,
                    state="COMPLETED",
                    storage=storage,
                    manifest={"files": [{"path": "x", "size": 1, "sha256": "0" * 64}]},
                    user_metadata={},
                    size=1,
                )
            )
        return ckpt


def create(cluster: Cluster, storage: dict[str, Any] | str) -> httpx.Response:
    text = storage if isinstance(storage, str) else json.dumps(storage)
    config = CONFIG.format(label=uuid.uuid4().hex[:8], storage=text)
    return cluster.api.post("/api/v1/experiments", json={"config": config, "paused": True})


def new_run(cluster: Cluster, storage: dict[str, Any] | str) -> Run:
    created = create(cluster, storage)
    assert created.status_code == 201, created.text
    experiment_id = created.json()["id"]
    (trial,) = cluster.api.get(f"/api/v1/experiments/{experiment_id}/trials").json()
    allocation_id, token = start_trial_run(cluster.database_url, trial["id"])
    return Run(cluster, experiment_id, trial["id"], allocation_id, token)


def own_fs(cluster: Cluster) -> dict[str, Any]:
    return {"type": "shared_fs", "host_path": str(cluster.allowed / f"exp-{uuid.uuid4().hex[:8]}")}


def moto(cluster: Cluster, **extra: Any) -> dict[str, Any]:
    return {**cluster.s3.storage_config(cluster.s3.new_bucket(), prefix="exp"), **extra}


def error_paths(response: httpx.Response) -> list[str]:
    return [e["path"] for e in response.json().get("errors", [])]


# --- registration ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_registration_naming_another_directory_is_refused_and_stores_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    run = new_run(cluster, own_fs(cluster))
    own = run.info_storage()
    canary = canary_dir(tmp_path / "canary", str(uuid.uuid4()))
    ckpt, manifest = run.write(own, 10)
    # The same checkpoint claimed elsewhere: another host_path, the right one with a storage_path
    # below it, a directory storage of the same path, the right path on an S3 endpoint.
    for claimed in (
        {"type": "shared_fs", "host_path": str(canary)},
        {**own, "storage_path": "elsewhere"},
        {"type": "directory", "container_path": own["host_path"]},
        {"type": "s3", "bucket": "b", "endpoint_url": cluster.canary_url},
    ):
        refused = run.register(ckpt, manifest, claimed)
        assert refused.status_code == 422, refused.text
        assert error_paths(refused) == ["storage"], refused.text
        assert run.state(ckpt) is None
    assert canary_intact(canary) and cluster.canary.requests == []
    # Credentials, policy and a trailing slash are not where bytes go: the same place registers,
    # and the row keeps the master's copy of the storage, not the claim.
    claim = {**own, "host_path": own["host_path"] + "/", "save_trial_best": 99, "note": "mine"}
    accepted = run.register(ckpt, manifest, claim)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["storage"] == {"type": "shared_fs", "host_path": own["host_path"]}


@pytest.mark.integration
def test_gc_never_touches_a_directory_a_trial_named(cluster: Cluster, tmp_path: Path) -> None:
    run = new_run(cluster, {**own_fs(cluster), "save_trial_latest": 5})
    kept = run.save(10)
    rogue = str(uuid.uuid4())
    canary = canary_dir(tmp_path / "canary", rogue)
    ckpt, manifest = run.write(run.info_storage(), 20)
    refused = run.register(ckpt, manifest, {"type": "shared_fs", "host_path": str(canary)})
    assert refused.status_code == 422 and run.state(ckpt) is None
    # A row naming the canary anyway (written before these rules, or by hand): deleting it deletes
    # in the experiment's own storage only, where its manifest never was.
    run.insert_row({"type": "shared_fs", "host_path": str(canary)}, 5, rogue)
    deleted = cluster.api.delete(f"/api/v1/checkpoints/{rogue}")
    assert deleted.status_code == 202, deleted.text
    requests = run.wait_collected()
    assert all(r.error is None for r in requests), [r.error for r in requests]
    assert run.state(rogue) == "DELETED"
    assert canary_intact(canary)
    assert run.state(kept) == "COMPLETED"
    own = open_storage(run.info_storage())
    assert read_manifest(own, kept)["uuid"] == kept
    own.close()


# --- SSRF -----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_no_request_ever_reaches_an_endpoint_off_the_allowlist(cluster: Cluster) -> None:
    # A trial's claim: refused at registration.
    run = new_run(cluster, moto(cluster))
    storage = run.info_storage()
    kept = run.save(10)
    ckpt, manifest = run.write(storage, 20)
    claimed = {**storage, "endpoint_url": cluster.canary_url}
    refused = run.register(ckpt, manifest, claimed)
    assert refused.status_code == 422 and error_paths(refused) == ["storage"]
    # A row claiming the canary: GC works on the experiment's own endpoint only.
    rogue = run.insert_row(claimed, 5)
    assert cluster.api.delete(f"/api/v1/checkpoints/{rogue}").status_code == 202
    assert all(r.error is None for r in run.wait_collected())
    assert run.state(rogue) == "DELETED" and run.state(kept) == "COMPLETED"

    # A config pointing at it (written before the allowlist): GC refuses the whole run.
    tampered = new_run(cluster, moto(cluster))
    doomed = tampered.save(10)
    with cluster.sessions.begin() as session:
        experiment = session.get(Experiment, tampered.experiment_id)
        assert experiment is not None
        section = {**experiment.config["checkpoint_storage"], "endpoint_url": cluster.canary_url}
        session.execute(
            update(Experiment)
            .where(Experiment.id == tampered.experiment_id)
            .values(config={**experiment.config, "checkpoint_storage": section})
        )
    assert cluster.api.delete(f"/api/v1/checkpoints/{doomed}").status_code == 202
    requests = tampered.wait_collected()
    assert requests[-1].error is not None and requests[-1].error.startswith("refused"), requests[-1].error
    assert "endpoint_url" in requests[-1].error
    assert tampered.state(doomed) == "COMPLETED"  # nothing was deleted, so nothing is marked
    assert cluster.canary.requests == []


@pytest.mark.integration
def test_creation_refuses_storage_the_master_may_not_touch(cluster: Cluster, tmp_path: Path) -> None:
    for storage, path in (
        (
            {"type": "s3", "bucket": "b", "endpoint_url": cluster.canary_url},
            "checkpoint_storage.endpoint_url",
        ),
        (
            {"type": "s3", "bucket": "b", "endpoint_url": "http://169.254.169.254"},
            "checkpoint_storage.endpoint_url",
        ),
        ({"type": "shared_fs", "host_path": str(tmp_path)}, "checkpoint_storage.host_path"),
        ({"type": "shared_fs", "host_path": str(cluster.allowed / "..")}, "checkpoint_storage.host_path"),
        ({"type": "directory", "container_path": "/etc"}, "checkpoint_storage.container_path"),
        ({"name": "no-such-storage"}, "checkpoint_storage.name"),
    ):
        refused = create(cluster, storage)
        assert refused.status_code == 422, (storage, refused.text)
        assert error_paths(refused) == [path], refused.text
    for storage in (own_fs(cluster), moto(cluster), {"type": "s3", "bucket": "on-aws"}, {"name": "team-fs"}):
        assert create(cluster, storage).status_code == 201, storage
    assert cluster.canary.requests == []


# --- named storage --------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("name", ["team-s3", "team-fs"])
def test_a_named_storage_runs_through_registration_and_gc_with_its_secrets_kept_back(
    cluster: Cluster, name: str
) -> None:
    run = new_run(cluster, f"{{name: {name}, save_trial_best: 0, save_trial_latest: 1}}")
    experiment = cluster.api.get(f"/api/v1/experiments/{run.experiment_id}").json()
    assert experiment["config"]["checkpoint_storage"]["type"] == "named"
    assert experiment["config"]["checkpoint_storage"]["name"] == name
    with cluster.sessions() as session:
        row = session.get(Experiment, run.experiment_id)
        assert row is not None and NAMED_SECRET not in json.dumps(row.config)  # kept server-side
        assert "bucket" not in row.config["checkpoint_storage"]

    storage = run.info_storage()  # only this experiment's runs are given the credentials
    if name == "team-s3":
        assert storage["secret_key"] == NAMED_SECRET and storage["access_key"] == NAMED_ACCESS
        assert storage["bucket"] == cluster.named_bucket and storage["save_trial_latest"] == 1
    first = run.save(10)
    second = run.save(20)
    # Registration asked for GC: the trial still runs, so its newest stays and the older goes.
    assert all(r.error is None for r in run.wait_collected())
    assert (run.state(first), run.state(second)) == ("DELETED", "COMPLETED")
    backend = open_storage(storage)
    assert sorted(o.key for o in backend.list("manifests/")) == [f"manifests/{second}.json"]
    backend.close()

    shown = cluster.api.get(f"/api/v1/checkpoints/{second}").json()
    assert shown["storage"]["name"] == name and "secret_key" not in shown["storage"]
    assert storage_service.same_location(shown["storage"], storage)
    for path in (
        f"/api/v1/experiments/{run.experiment_id}",
        f"/api/v1/experiments/{run.experiment_id}/checkpoints",
        f"/api/v1/checkpoints/{second}",
        f"/api/v1/checkpoints/{second}/lineage",
        "/api/v1/experiments?limit=1000",
    ):
        answer = cluster.api.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert NAMED_SECRET not in answer.text and NAMED_ACCESS not in answer.text, path


# --- masking --------------------------------------------------------------------------------------


SECRET_YAML = """\
{{type: s3, bucket: {bucket}, prefix: mine, endpoint_url: "{endpoint}",
  access_key: {access}, secret_key: "{secret}"}}  # secret_key: {old}
environment:
  environment_variables: [HF_TOKEN={token}, DEBUG=1]
"""


@pytest.mark.integration
def test_secrets_never_appear_in_answers_or_cli_output(cluster: Cluster) -> None:
    secrets = {k: f"{k}-{uuid.uuid4().hex}" for k in ("access", "secret", "old", "token")}
    bucket = cluster.s3.new_bucket()
    run = new_run(cluster, SECRET_YAML.format(bucket=bucket, endpoint=cluster.s3.endpoint_url, **secrets))
    storage = run.info_storage()
    assert storage["secret_key"] == secrets["secret"]  # the experiment's own runs need it
    saved = run.save(10)
    # A row from before rows lost their credentials: masked on the way out.
    legacy = run.insert_row({**storage, "secret_key": secrets["secret"]}, 5)

    def leaked(text: str) -> list[str]:
        return [name for name, value in secrets.items() if value in text]

    experiment = cluster.api.get(f"/api/v1/experiments/{run.experiment_id}").json()
    assert experiment["config"]["checkpoint_storage"]["secret_key"] == MASK
    assert experiment["config"]["environment"]["environment_variables"] == [f"HF_TOKEN={MASK}", "DEBUG=1"]
    original = experiment["original_config"]
    assert "# secret_key: ********" in original and "DEBUG=1" in original  # comments and the rest kept
    for path in (
        f"/api/v1/experiments/{run.experiment_id}",
        f"/api/v1/experiments/{run.experiment_id}/checkpoints",
        f"/api/v1/checkpoints/{saved}",
        f"/api/v1/checkpoints/{legacy}",
        f"/api/v1/checkpoints/{saved}/lineage",
        "/api/v1/experiments?limit=1000",
    ):
        answer = cluster.api.get(path)
        assert answer.status_code == 200 and leaked(answer.text) == [], (path, leaked(answer.text))

    env = {"STALWART_MASTER": str(cluster.api.base_url), "STALWART_TOKEN": cluster.admin_token}
    runner = CliRunner()
    for args in (
        ["experiment", "describe", str(run.experiment_id), "--json"],
        ["experiment", "config", str(run.experiment_id)],
        ["experiment", "config", str(run.experiment_id), "--json"],
        ["experiment", "list", "--json"],
        ["checkpoint", "list", str(run.experiment_id), "--json"],
        ["checkpoint", "describe", legacy],
        ["checkpoint", "describe", legacy, "--json"],
        ["checkpoint", "lineage", saved, "--json"],
    ):
        result = runner.invoke(cli_app, args, env=env)
        assert result.exit_code == 0, (args, result.output)
        assert leaked(result.output) == [], (args, leaked(result.output))


@pytest.mark.unit
def test_the_cli_masks_what_a_master_sends_unmasked(tmp_path: Path) -> None:
    """An older or misconfigured master may answer with secrets: the CLI masks them itself."""
    secret = "cli-secret-" + uuid.uuid4().hex
    now = dt.datetime.now(dt.UTC).isoformat()
    config = {
        "name": "x",
        "searcher": {"name": "single", "metric": "loss"},
        "checkpoint_storage": {"type": "s3", "bucket": "b", "secret_key": secret},
    }
    experiment = {
        "id": 7,
        "name": "x",
        "description": "",
        "labels": [],
        "state": "ACTIVE",
        "archived": False,
        "owner": "admin",
        "project_id": 1,
        "parent_id": None,
        "context_sha256": None,
        "created_at": now,
        "updated_at": now,
        "ended_at": None,
        "config": config,
        "original_config": f"checkpoint_storage: {{type: s3, bucket: b, secret_key: {secret}}}\n",
    }
    checkpoint = {
        "uuid": str(uuid.uuid4()),
        "trial_id": 1,
        "experiment_id": 7,
        "allocation_id": None,
        "steps_completed": 1,
        "state": "COMPLETED",
        "storage": config["checkpoint_storage"],
        "manifest": {"files": []},
        "metadata": {},
        "size": 1,
        "stored_size": None,
        "parent_uuid": None,
        "created_at": now,
    }
    answers = {
        "/api/v1/experiments/7": experiment,
        "/api/v1/experiments/7/trials": [],
        f"/api/v1/checkpoints/{checkpoint['uuid']}": checkpoint,
    }

    class Master(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(answers.get(self.path.split("?")[0])).encode()
            self.send_response(200 if self.path.split("?")[0] in answers else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Master)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"STALWART_MASTER": f"http://127.0.0.1:{server.server_address[1]}", "STALWART_TOKEN": "t"}
    try:
        for args in (
            ["experiment", "describe", "7", "--json"],
            ["experiment", "config", "7"],
            ["experiment", "config", "7", "--json"],
            ["checkpoint", "describe", checkpoint["uuid"]],
            ["checkpoint", "describe", checkpoint["uuid"], "--json"],
        ):
            result = CliRunner().invoke(cli_app, args, env=env)
            assert result.exit_code == 0, (args, result.output)
            assert secret not in result.output and MASK in result.output, (args, result.output)
    finally:
        server.shutdown()


# --- the rules, unit by unit ----------------------------------------------------------------------


@pytest.mark.unit
def test_masking_yaml_keeps_comments_and_layout_and_hides_every_secret() -> None:
    text = """\
# team config
checkpoint_storage:
  type: s3        # the team bucket
  bucket: ckpt
  access_key: AKIAEXAMPLE
  secret_key: 'hunter2 # not a comment'
  # secret_key: old-secret
creds: &creds
  password: |
    multi
    line
common: &plain pad
hyperparameters:
  pad_token: "<pad>"
  max_tokens: 512
environment:
  environment_variables:
    - AWS_SECRET_ACCESS_KEY=abc123
    - DEBUG=1
data:
  merged: {<<: *creds, user: me}
  token: 42
"""
    masked = mask_yaml_text(text)
    for secret in ("AKIAEXAMPLE", "hunter2", "old-secret", "multi", "abc123", "42"):
        assert secret not in masked, secret
    for kept in ("# team config", "# the team bucket", 'pad_token: "<pad>"', "max_tokens: 512", "DEBUG=1"):
        assert kept in masked, kept
    assert yaml.safe_load(masked) == mask_config(yaml.safe_load(text))
    # YAML it cannot edit in place (a secret reached through an alias elsewhere) is dumped anew.
    aliased = "plain: &s value\nsecret_key: *s\n"
    assert yaml.safe_load(mask_yaml_text(aliased)) == {"plain": "value", "secret_key": MASK}
    assert mask_yaml_text("# password: x\n") == f"# password: {MASK}\n"
    assert mask_yaml_text("a: [unclosed\nsecret_key: abc\n") == f"a: [unclosed\nsecret_key: {MASK}\n"


@pytest.mark.unit
def test_the_same_place_is_one_location_whatever_its_spelling_or_credentials() -> None:
    s3 = {"type": "s3", "bucket": "b", "prefix": "/team/", "endpoint_url": "HTTP://Minio.local:80/"}
    assert storage_service.same_location(
        s3,
        {
            "type": "s3",
            "bucket": "b",
            "prefix": "team",
            "endpoint_url": "http://minio.local",
            "secret_key": "x",
        },
    )
    assert not storage_service.same_location(s3, {**s3, "endpoint_url": "http://minio.local:9000"})
    assert not storage_service.same_location(s3, {**s3, "bucket": "c"})
    fs = {"type": "shared_fs", "host_path": "/a", "storage_path": "b"}
    assert storage_service.same_location(fs, {"type": "shared_fs", "host_path": "/a/b/"})
    assert not storage_service.same_location(fs, {"type": "directory", "container_path": "/a/b"})
    for bad in ("http://user:pw@minio.local", "ftp://minio.local", "http://minio.local/?x=1", "http://"):
        assert storage_service.endpoint_origin(bad) is None, bad
    assert (
        storage_service.public_storage({**s3, "access_key": "a", "secret_key": "s", "save_trial_best": 1})
        == s3
    )


@pytest.mark.unit
def test_roots_and_allowlist_decide_what_an_experiment_may_name(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        storage=StorageSettings(
            shared_fs_roots=[tmp_path / "nfs"],
            endpoint_allowlist=["https://minio.internal:9000"],
            named={"ops": {"type": "shared_fs", "host_path": str(tmp_path / "ops")}},
        ),
    )

    def paths(storage: dict[str, Any]) -> list[str]:
        try:
            storage_service.check_experiment_storage({"checkpoint_storage": storage}, settings)
        except Invalid as exc:
            return [e.path for e in exc.errors]
        return []

    assert paths({"type": "shared_fs", "host_path": str(tmp_path / "nfs" / "team")}) == []
    assert paths({"type": "shared_fs", "host_path": str(tmp_path / "data" / "checkpoints")}) == []
    assert paths({"type": "shared_fs", "host_path": str(tmp_path / "ops" / "sub")}) == []
    assert paths({"type": "shared_fs", "host_path": str(tmp_path / "nfs-other")}) == [
        "checkpoint_storage.host_path"
    ]
    assert paths({"type": "s3", "bucket": "b", "endpoint_url": "https://MINIO.internal:9000/"}) == []
    assert paths({"type": "s3", "bucket": "b"}) == []
    assert paths({"type": "s3", "bucket": "b", "endpoint_url": "http://minio.internal:9000"}) == [
        "checkpoint_storage.endpoint_url"
    ]
    assert paths({"type": "named", "name": "ops"}) == []
    assert paths({"type": "named", "name": "nope"}) == ["checkpoint_storage.name"]

    # A link planted inside an allowed root is followed before the worker acts.
    (tmp_path / "nfs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "nfs" / "link").symlink_to(tmp_path / "elsewhere")
    linked = {"type": "shared_fs", "host_path": str(tmp_path / "nfs" / "link")}
    assert paths(linked) == []  # as written it is inside; only the worker's look finds the link
    with pytest.raises(storage_service.StorageRefused, match="outside"):
        storage_service.check_reachable(linked, settings)
    storage_service.check_reachable({"type": "shared_fs", "host_path": str(tmp_path / "nfs")}, settings)


@pytest.mark.unit
def test_a_misspelt_named_storage_stops_the_master_at_start() -> None:
    with pytest.raises(ValueError, match=r"team.*bucket"):
        StorageSettings(named={"team": {"type": "s3"}})
    with pytest.raises(ValueError, match="not an http"):
        StorageSettings(endpoint_allowlist=["minio.local:9000"])


def test_a_determined_registry_auth_block_is_masked_whole_in_text_and_in_data() -> None:
    text = "environment:\n  registry_auth:\n    username: bot\n    auth: c2VjcmV0\n    identitytoken: tok\n"
    masked = yaml.safe_load(mask_yaml_text(text))
    assert masked["environment"]["registry_auth"] == {"username": MASK, "auth": MASK, "identitytoken": MASK}
    data = mask_config({"environment": {"registry_auth": {"registrytoken": "abc"}, "image": "x"}})
    assert data == {"environment": {"registry_auth": {"registrytoken": MASK}, "image": "x"}}
