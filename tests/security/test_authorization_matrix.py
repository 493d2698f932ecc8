"""Who may do what in a workspace: every role by every verb on every kind of object.

Users: the owner of the objects (an editor), another editor, a viewer, a workspace admin, a cluster
admin, and an outsider with no role in the workspace (an editor of the default one, as every new
user is). Only the allowed cells may succeed; the outsider must not even learn the objects exist.
"""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from registry_support import report_checkpoint, start_trial

pytestmark = pytest.mark.integration

PASSWORD = "matrix-password-1"
CONFIG = (
    "name: matrix-{tag}\nentrypoint: python3 train.py\nsearcher: {{name: single, metric: loss}}\n"
    "resources: {{resource_pool: nowhere}}\n"
    # The checkpoints here have no metrics: keep them all, whatever GC runs meanwhile.
    "checkpoint_storage: {{save_trial_latest: 100}}\n"
)
ROLES = ("owner", "editor", "viewer", "wsadmin", "admin", "outsider")


@dataclass
class World:
    http: Any
    headers: dict[str, dict[str, str]]
    workspace: int
    project: int
    experiment: int
    trial: int
    model: str
    checkpoint: str
    other_checkpoint: str

    def call(self, who: str, method: str, path: str, body: Any = None) -> int:
        response = self.http.request(method, path, headers=self.headers[who], json=body)
        assert response.status_code < 500, response.text
        return int(response.status_code)


def _login(http: Any, username: str, password: str) -> dict[str, str]:
    response = http.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def _upload_context(http: Any, headers: dict[str, str], tag: str) -> str:
    """Model code for the Code tab's routes: one file, ``train.py``."""
    buffer = io.BytesIO()
    data = f"print('{tag}')\n".encode()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    response = http.post(
        "/api/v1/contexts",
        content=buffer.getvalue(),
        headers={**headers, "Content-Type": "application/gzip"},
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["sha256"])


@pytest.fixture(scope="module")
def world(app: Any, admin_token: str) -> World:
    http = app
    tag = uuid.uuid4().hex[:8]
    admin = {"Authorization": f"Bearer {admin_token}"}
    names = {role: f"{role}-{tag}" for role in ROLES if role != "admin"}
    for name in names.values():
        response = http.post("/api/v1/users", headers=admin, json={"username": name, "password": PASSWORD})
        assert response.status_code == 201, response.text
    headers = {role: _login(http, name, PASSWORD) for role, name in names.items()}
    headers["admin"] = admin

    workspace = http.post("/api/v1/workspaces", headers=admin, json={"name": f"team-{tag}"}).json()["id"]
    for role, name in names.items():
        granted = {"owner": "editor", "editor": "editor", "viewer": "viewer", "wsadmin": "admin"}.get(role)
        if granted:
            response = http.put(
                f"/api/v1/workspaces/{workspace}/members/{name}", headers=admin, json={"role": granted}
            )
            assert response.status_code == 200, response.text
    project = http.post(
        f"/api/v1/workspaces/{workspace}/projects", headers=headers["owner"], json={"name": "p"}
    ).json()["id"]
    experiment = http.post(
        "/api/v1/experiments",
        headers=headers["owner"],
        json={
            "config": CONFIG.format(tag=tag),
            "paused": True,
            "project_id": project,
            "context": _upload_context(http, headers["owner"], tag),
        },
    ).json()["id"]
    run = start_trial(app.app_ref.state.sessions, experiment)
    checkpoint = report_checkpoint(http, run, steps=10)
    other_checkpoint = report_checkpoint(http, run, steps=20)
    model = f"model-{tag}"
    response = http.post(
        "/api/v1/models", headers=headers["owner"], json={"name": model, "project_id": project}
    )
    assert response.status_code == 201, response.text
    return World(
        http, headers, workspace, project, experiment, run.trial_id, model, checkpoint, other_checkpoint
    )


READERS = {"owner", "editor", "viewer", "wsadmin", "admin"}
CREATORS = {"owner", "editor", "wsadmin", "admin"}
CHANGERS = {"owner", "wsadmin", "admin"}
WORKSPACE_ADMINS = {"wsadmin", "admin"}

# (name, allowed roles, request) — requests that change something put it back where they can.
Verb = tuple[str, set[str], Callable[[World, str], int]]
VERBS: list[Verb] = [
    ("read experiment", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/experiments/{w.experiment}")),
    ("read trials", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/experiments/{w.experiment}/trials")),
    ("read trial", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/trials/{w.trial}")),
    ("read metrics", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/trials/{w.trial}/metrics")),
    ("read logs", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/trials/{w.trial}/logs")),
    ("read runs", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/trials/{w.trial}/runs")),
    (
        "read checkpoints",
        READERS,
        lambda w, u: w.call(u, "GET", f"/api/v1/experiments/{w.experiment}/checkpoints"),
    ),
    ("read checkpoint", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/checkpoints/{w.checkpoint}")),
    ("read lineage", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/checkpoints/{w.checkpoint}/lineage")),
    ("read model", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/models/{w.model}")),
    ("read versions", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/models/{w.model}/versions")),
    ("read workspace", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/workspaces/{w.workspace}")),
    ("read members", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/workspaces/{w.workspace}/members")),
    ("read projects", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/workspaces/{w.workspace}/projects")),
    ("read project", READERS, lambda w, u: w.call(u, "GET", f"/api/v1/projects/{w.project}")),
    (
        "edit experiment",
        CHANGERS,
        lambda w, u: w.call(u, "PATCH", f"/api/v1/experiments/{w.experiment}", {"description": u}),
    ),
    ("activate experiment", CHANGERS, lambda w, u: _twice(w, u, "activate", "pause")),
    (
        "set GC policy",
        CHANGERS,
        lambda w, u: w.call(
            u, "PATCH", f"/api/v1/experiments/{w.experiment}/gc-policy", {"save_trial_best": 5}
        ),
    ),
    (
        "move experiment",
        CHANGERS,
        lambda w, u: w.call(u, "POST", f"/api/v1/experiments/{w.experiment}/move", {"project_id": w.project}),
    ),
    (
        "create experiment",
        CREATORS,
        lambda w, u: w.call(
            u,
            "POST",
            "/api/v1/experiments",
            {"config": CONFIG.format(tag=uuid.uuid4().hex[:8]), "paused": True, "project_id": w.project},
        ),
    ),
    (
        "create model",
        CREATORS,
        lambda w, u: w.call(
            u, "POST", "/api/v1/models", {"name": f"m-{uuid.uuid4().hex[:8]}", "project_id": w.project}
        ),
    ),
    (
        "create project",
        CREATORS,
        lambda w, u: w.call(
            u, "POST", f"/api/v1/workspaces/{w.workspace}/projects", {"name": uuid.uuid4().hex[:8]}
        ),
    ),
    (
        "edit model",
        CHANGERS,
        lambda w, u: w.call(u, "PATCH", f"/api/v1/models/{w.model}", {"description": u}),
    ),
    ("register version", CHANGERS, lambda w, u: _register_and_delete(w, u)),
    (
        "warm-start from checkpoint",
        READERS,
        lambda w, u: w.call(
            u,
            "POST",
            "/api/v1/experiments",
            {
                "config": CONFIG.format(tag=uuid.uuid4().hex[:8]).replace(
                    "metric: loss}", f"metric: loss, source_checkpoint_uuid: '{w.checkpoint}'}}"
                ),
                "paused": True,
            },
        ),
    ),
    (
        "edit workspace",
        WORKSPACE_ADMINS,
        lambda w, u: w.call(u, "PATCH", f"/api/v1/workspaces/{w.workspace}", {"archived": False}),
    ),
    (
        "assign role",
        WORKSPACE_ADMINS,
        lambda w, u: w.call(
            u, "PUT", f"/api/v1/workspaces/{w.workspace}/members/{_name(w, 'viewer')}", {"role": "viewer"}
        ),
    ),
    ("delete checkpoint", CHANGERS, lambda w, u: _delete_checkpoint(w, u)),
    # Issue 10's routes: the fork tree, Determined's `e set`, fork and continue.
    (
        "read fork tree",
        READERS,
        lambda w, u: w.call(u, "GET", f"/api/v1/experiments/{w.experiment}/versions"),
    ),
    (
        "set resources",
        CHANGERS,
        lambda w, u: w.call(u, "PATCH", f"/api/v1/experiments/{w.experiment}/resources", {"max_slots": 4}),
    ),
    (
        "fork experiment",
        CREATORS,
        lambda w, u: w.call(u, "POST", f"/api/v1/experiments/{w.experiment}/fork", {"paused": True}),
    ),
    # The experiment is PAUSED, not ended: an allowed role gets 409, the others 403/404 first.
    (
        "continue experiment",
        CHANGERS,
        lambda w, u: w.call(u, "POST", f"/api/v1/experiments/{w.experiment}/continue", {}),
    ),
    # Issue 11's dashboard routes: downsampled charts, the Code tab, the Cluster page.
    (
        "read downsampled metrics",
        READERS,
        lambda w, u: w.call(u, "GET", f"/api/v1/trials/{w.trial}/metrics?max_points=100&metric=loss"),
    ),
    (
        "read context files",
        READERS,
        lambda w, u: w.call(u, "GET", f"/api/v1/experiments/{w.experiment}/context"),
    ),
    (
        "read context file",
        READERS,
        lambda w, u: w.call(u, "GET", f"/api/v1/experiments/{w.experiment}/context/file?path=train.py"),
    ),
    # Every signed-in user sees the queue and the pools; whose runs they are is the next test's.
    ("read job queue", set(ROLES), lambda w, u: w.call(u, "GET", "/api/v1/job-queues")),
    ("read resource pools", set(ROLES), lambda w, u: w.call(u, "GET", "/api/v1/resource-pools")),
]
CONFLICT_MEANS_ALLOWED = {"delete checkpoint", "continue experiment"}


def _name(world: World, role: str) -> str:
    me = world.http.get("/api/v1/me", headers=world.headers[role]).json()
    return str(me["username"])


def _twice(world: World, who: str, verb: str, undo: str) -> int:
    status = world.call(who, "POST", f"/api/v1/experiments/{world.experiment}/{verb}")
    if status < 300:
        assert world.call("admin", "POST", f"/api/v1/experiments/{world.experiment}/{undo}") == 200
    return status


def _register_and_delete(world: World, who: str) -> int:
    status = world.call(
        who, "POST", f"/api/v1/models/{world.model}/versions", {"checkpoint_uuid": world.checkpoint}
    )
    if status < 300:
        latest = world.http.get(f"/api/v1/models/{world.model}", headers=world.headers["admin"]).json()
        number = latest["latest_version"]
        assert world.call(who, "DELETE", f"/api/v1/models/{world.model}/versions/{number}") == 204
    return status


def _delete_checkpoint(world: World, who: str) -> int:
    """Only the last allowed role really deletes; the others are asked about a registered one (409)."""
    return world.call(who, "DELETE", f"/api/v1/checkpoints/{world.other_checkpoint}")


@pytest.mark.parametrize("verb", VERBS, ids=[v[0] for v in VERBS])
def test_only_allowed_roles_succeed_and_outsiders_see_nothing(world: World, verb: Verb) -> None:
    name, allowed, attempt = verb
    outcomes = {role: attempt(world, role) for role in ROLES}
    for role, status in outcomes.items():
        if role in allowed:
            assert status < 300 or (name in CONFLICT_MEANS_ALLOWED and status in (202, 409)), (
                name,
                role,
                outcomes,
            )
        elif role == "outsider":
            assert status in (404, 422), (name, role, outcomes)  # 422: a warm start names a field
        else:
            assert status == 403, (name, role, outcomes)


def test_outsiders_do_not_see_the_workspace_in_lists(world: World) -> None:
    for path, key in (
        ("/api/v1/experiments?limit=1000", "id"),
        ("/api/v1/models?limit=1000", "name"),
    ):
        seen = {item[key] for item in world.http.get(path, headers=world.headers["outsider"]).json()["items"]}
        assert world.experiment not in seen and world.model not in seen
        seen = {item[key] for item in world.http.get(path, headers=world.headers["viewer"]).json()["items"]}
        assert world.experiment in seen or world.model in seen
    workspaces = world.http.get("/api/v1/workspaces", headers=world.headers["outsider"]).json()
    assert world.workspace not in {w["id"] for w in workspaces}


def test_outsiders_see_the_workspaces_queued_runs_without_whose_they_are(world: World) -> None:
    """The world's trial holds a RUNNING run: every user sees its place, only readers see what it is."""

    def entries(who: str) -> list[dict[str, Any]]:
        response = world.http.get("/api/v1/job-queues", headers=world.headers[who])
        assert response.status_code == 200, response.text
        return [e for e in response.json() if e["allocation_id"] in allocations]

    readable = world.http.get(f"/api/v1/trials/{world.trial}/runs", headers=world.headers["viewer"]).json()
    allocations = {
        run["allocation_id"] for run in readable if run["state"] in ("PENDING", "ASSIGNED", "RUNNING")
    }
    assert allocations
    for entry in entries("viewer"):
        assert (entry["experiment_id"], entry["trial_id"]) == (world.experiment, world.trial)
    hidden = entries("outsider")
    assert hidden and all(
        (e["experiment_id"], e["trial_id"], e["experiment_name"], e["owner"]) == (None, None, None, None)
        for e in hidden
    )
    files = world.http.get(f"/api/v1/experiments/{world.experiment}/context", headers=world.headers["viewer"])
    assert files.json() == {"files": [{"path": "train.py", "size": files.json()["files"][0]["size"]}]}


def test_a_model_version_cannot_pin_someone_elses_checkpoint(world: World) -> None:
    """Finding 7: registering another user's checkpoint in one's own model blocked its deletion."""
    mine = f"mine-{uuid.uuid4().hex[:8]}"
    assert world.call("editor", "POST", "/api/v1/models", {"name": mine, "project_id": world.project}) == 201
    status = world.call(
        "editor", "POST", f"/api/v1/models/{mine}/versions", {"checkpoint_uuid": world.checkpoint}
    )
    assert status == 403
    assert (
        world.call(
            "outsider",
            "POST",
            f"/api/v1/models/{world.model}/versions",
            {"checkpoint_uuid": world.checkpoint},
        )
        == 404
    )
    # Models and versions can be deleted by whoever may change them.
    assert world.call("editor", "DELETE", f"/api/v1/models/{mine}") == 204
    assert world.call("editor", "GET", f"/api/v1/models/{mine}") == 404


def test_only_those_who_may_change_an_experiment_kill_one_of_its_trials(world: World) -> None:
    """``t kill`` (Determined's KillTrial): a trial of its own experiment, so the matrix's stays alive."""
    created = world.http.post(
        "/api/v1/experiments",
        headers=world.headers["owner"],
        json={"config": CONFIG.format(tag=uuid.uuid4().hex[:8]), "paused": True, "project_id": world.project},
    )
    assert created.status_code == 201, created.text
    experiment = created.json()["id"]
    (trial,) = world.http.get(
        f"/api/v1/experiments/{experiment}/trials", headers=world.headers["owner"]
    ).json()
    outcomes = {
        role: world.call(role, "POST", f"/api/v1/trials/{trial['id']}/kill")
        for role in ("outsider", "viewer", "editor", "wsadmin", "owner")
    }
    assert outcomes == {"outsider": 404, "viewer": 403, "editor": 403, "wsadmin": 200, "owner": 200}
    killed = world.http.get(f"/api/v1/trials/{trial['id']}", headers=world.headers["owner"]).json()
    assert killed["state"] == "CANCELED" and killed["end_reason"].startswith("killed by ")
