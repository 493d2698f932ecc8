"""Fork, continue and the fork tree over HTTP, on the real app and database (no agents: runs end
through the same service call an agent's report reaches)."""

from __future__ import annotations

import io
import tarfile
import uuid
from typing import Any

import pytest
from registry_support import start_trial
from sqlalchemy import select, update

from stalwart_master.db.orm import Allocation, AuditEvent, Trial
from stalwart_master.services import allocations as allocations_service
from stalwart_master.services.versions import continue_override_errors, deep_merge

pytestmark = pytest.mark.integration

PASSWORD = "versions-password-1"
# A pool no agent serves: nothing here runs for real.
CONFIG = (
    "name: versions-{tag}\nentrypoint: python3 train.py\nhyperparameters: {{lr: 0.01, layers: 2}}\n"
    "searcher: {{name: single, metric: loss, max_length: 10}}\nmax_restarts: 0\n"
    "resources: {{resource_pool: nowhere}}\n"
)


def _context(admin: Any) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    response = admin.post(
        "/api/v1/contexts", content=buffer.getvalue(), headers={"Content-Type": "application/gzip"}
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["sha256"])


def _create(admin: Any, **body: Any) -> dict[str, Any]:
    config = CONFIG.format(tag=uuid.uuid4().hex[:8])
    response = admin.post("/api/v1/experiments", json={"config": config, **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _user(admin: Any) -> tuple[str, dict[str, str]]:
    name = f"versions-{uuid.uuid4().hex[:8]}"
    assert admin.post("/api/v1/users", json={"username": name, "password": PASSWORD}).status_code == 201
    token = admin.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}).json()["token"]
    return name, {"Authorization": f"Bearer {token}"}


def _fail_only_run(admin: Any, experiment_id: int, exit_code: int = 1) -> None:
    """The trial's run exits with ``exit_code``, as an agent would report it."""
    run = start_trial(admin.app_ref.state.sessions, experiment_id)
    with admin.app_ref.state.sessions.begin() as session:
        # A run the scheduler queued before (in a pool no agent serves) never starts; once the
        # trial holds the RUNNING one, no other is queued.
        session.execute(
            update(Allocation)
            .where(Allocation.state == "PENDING", Allocation.trial_id == run.trial_id)
            .values(state="TERMINATED")
        )
        allocation = session.get(Allocation, run.allocation_id)
        allocations_service.finish_allocation(session, allocation, exit_code, "exited")


def test_fork_copies_context_project_and_seed_and_applies_overrides(admin) -> None:  # type: ignore[no-untyped-def]
    parent = _create(admin, context=_context(admin))
    response = admin.post(
        f"/api/v1/experiments/{parent['id']}/fork",
        json={"config_overrides": {"hyperparameters": {"lr": 0.5}, "max_restarts": 4}},
    )
    assert response.status_code == 201, response.text
    child = response.json()
    assert child["parent_id"] == parent["id"] and child["id"] != parent["id"]
    assert child["context_sha256"] == parent["context_sha256"] is not None
    assert child["project_id"] == parent["project_id"] and child["state"] == "ACTIVE"
    assert child["config"]["hyperparameters"] == {"lr": 0.5, "layers": 2}
    assert child["config"]["max_restarts"] == 4
    seed = parent["config"]["reproducibility"]["experiment_seed"]
    assert child["config"]["reproducibility"]["experiment_seed"] == seed

    bad = admin.post(
        f"/api/v1/experiments/{parent['id']}/fork", json={"config_overrides": {"max_restarts": -1}}
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "max_restarts"
    with admin.app_ref.state.sessions() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.target_id == str(child["id"])))
        assert event is not None and event.action == "experiment.fork"
        assert event.details == {"parent_id": parent["id"]}


def test_continue_after_error_reopens_the_trial_with_new_retries(admin) -> None:  # type: ignore[no-untyped-def]
    experiment = _create(admin)
    eid = experiment["id"]
    refused = admin.post(f"/api/v1/experiments/{eid}/continue", json={})
    assert refused.status_code == 409 and "ACTIVE" in refused.json()["detail"]

    _fail_only_run(admin, eid)
    ended = admin.get(f"/api/v1/experiments/{eid}").json()
    assert ended["state"] == "ERROR"

    changed = admin.post(
        f"/api/v1/experiments/{eid}/continue",
        json={"config_overrides": {"hyperparameters": {"lr": 0.5, "layers": 2}, "entrypoint": "x"}},
    )
    assert changed.status_code == 422
    assert {e["path"] for e in changed.json()["errors"]} == {"hyperparameters.lr", "entrypoint"}
    assert admin.get(f"/api/v1/experiments/{eid}").json()["state"] == "ERROR"  # nothing changed

    response = admin.post(
        f"/api/v1/experiments/{eid}/continue",
        json={"config_overrides": {"max_restarts": 3, "hyperparameters": {"lr": 0.01}}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "ACTIVE" and body["ended_at"] is None and body["config"]["max_restarts"] == 3
    with admin.app_ref.state.sessions() as session:
        (trial,) = session.scalars(select(Trial).where(Trial.experiment_id == eid)).all()
        assert body["resumed_trial_ids"] == [trial.id]
        assert (trial.state, trial.restarts, trial.ended_at) == ("ACTIVE", 0, None)
        failed_run = trial.run_id
        assert session.scalar(
            select(AuditEvent).where(
                AuditEvent.action == "experiment.continue", AuditEvent.target_id == str(eid)
            )
        )

    # The trial runs again, as a new run, and its failure now only counts a restart.
    _fail_only_run(admin, eid)
    with admin.app_ref.state.sessions() as session:
        trial = session.get(Trial, trial.id)
        assert (trial.state, trial.restarts) == ("ACTIVE", 1) and trial.run_id > failed_run


def test_a_completed_single_trial_continues_with_a_longer_max_length(admin) -> None:  # type: ignore[no-untyped-def]
    eid = _create(admin)["id"]
    _fail_only_run(admin, eid, exit_code=0)
    assert admin.get(f"/api/v1/experiments/{eid}").json()["state"] == "COMPLETED"
    response = admin.post(
        f"/api/v1/experiments/{eid}/continue", json={"config_overrides": {"searcher": {"max_length": 20}}}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "ACTIVE" and len(body["resumed_trial_ids"]) == 1
    assert body["config"]["searcher"]["max_length"]["batches"] == 20
    assert "max_length: 20" in body["original_config"]


def test_versions_show_the_tree_and_hide_what_the_caller_cannot_see(admin) -> None:  # type: ignore[no-untyped-def]
    root = _create(admin)
    fork = lambda eid: admin.post(f"/api/v1/experiments/{eid}/fork", json={}).json()  # noqa: E731
    child = fork(root["id"])
    grandchild = fork(child["id"])
    sibling = fork(root["id"])
    tree = admin.get(f"/api/v1/experiments/{grandchild['id']}/versions")
    assert tree.status_code == 200, tree.text
    assert [(v["id"], v["parent_id"]) for v in tree.json()] == [
        (root["id"], None),
        (child["id"], root["id"]),
        (grandchild["id"], child["id"]),
        (sibling["id"], root["id"]),
    ]

    # The sibling moves to a workspace the user has no role in: gone from their tree, 404 itself.
    _, outsider = _user(admin)
    workspace = admin.post("/api/v1/workspaces", json={"name": f"ws-{uuid.uuid4().hex[:8]}"}).json()["id"]
    project = admin.post(f"/api/v1/workspaces/{workspace}/projects", json={"name": "p"}).json()["id"]
    assert (
        admin.post(f"/api/v1/experiments/{sibling['id']}/move", json={"project_id": project}).status_code
        == 200
    )
    seen = admin.get(f"/api/v1/experiments/{root['id']}/versions", headers=outsider).json()
    assert [v["id"] for v in seen] == [root["id"], child["id"], grandchild["id"]]
    for method, path in (
        ("GET", "versions"),
        ("POST", "fork"),
        ("POST", "continue"),
    ):
        response = admin.request(
            method, f"/api/v1/experiments/{sibling['id']}/{path}", headers=outsider, json={}
        )
        assert response.status_code == 404, (path, response.text)


def test_a_viewer_may_not_fork_and_nobody_inherits_someone_elses_secrets(admin) -> None:  # type: ignore[no-untyped-def]
    name, viewer = _user(admin)
    workspace = admin.post("/api/v1/workspaces", json={"name": f"ws-{uuid.uuid4().hex[:8]}"}).json()["id"]
    project = admin.post(f"/api/v1/workspaces/{workspace}/projects", json={"name": "p"}).json()["id"]
    admin.put(f"/api/v1/workspaces/{workspace}/members/{name}", json={"role": "viewer"})
    parent = _create(admin, project_id=project)
    assert admin.post(f"/api/v1/experiments/{parent['id']}/fork", headers=viewer, json={}).status_code == 403

    _, editor = _user(admin)  # an editor of the default workspace, like every new user
    config = CONFIG.format(tag="s") + "environment: {environment_variables: [HF_TOKEN=abc]}\n"
    secret = admin.post("/api/v1/experiments", json={"config": config}).json()
    refused = admin.post(f"/api/v1/experiments/{secret['id']}/fork", headers=editor, json={})
    assert refused.status_code == 403 and "environment.environment_variables" in refused.json()["detail"]
    mine = {"environment": {"environment_variables": ["HF_TOKEN=mine"]}}
    forked = admin.post(
        f"/api/v1/experiments/{secret['id']}/fork", headers=editor, json={"config_overrides": mine}
    )
    assert forked.status_code == 201, forked.text


def test_continue_overrides_rule() -> None:
    config = {"searcher": {"name": "random", "max_length": {"batches": 10}}, "hyperparameters": {"lr": 1}}
    overrides = {
        "max_restarts": 9,
        "resources": {"max_slots": 2},
        "checkpoint_storage": {"save_trial_latest": 3, "host_path": "/x"},
        "searcher": {"max_length": {"batches": 20}},
        "hyperparameters": {"lr": 1},
    }
    assert [e.path for e in continue_override_errors(config, overrides)] == [
        "checkpoint_storage.host_path",
        "searcher.max_length.batches",
    ]
    config["searcher"]["name"] = "single"
    assert [e.path for e in continue_override_errors(config, overrides)] == ["checkpoint_storage.host_path"]
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": 3}, "d": None}) == {
        "a": {"b": 3, "c": 2},
        "d": None,
    }
