"""The model registry over HTTP: names, versions numbered per model, and only usable checkpoints."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from registry_support import RunningTrial, report_checkpoint, start_trial
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from stalwart_master.db.orm import Checkpoint, Experiment, User
from stalwart_master.services import models as models_service

pytestmark = pytest.mark.integration
# Registered checkpoints here have no metrics: keep them all, whatever GC runs meanwhile.
CONFIG = (
    "name: {name}\nentrypoint: python3 train.py\nsearcher: {{name: single, metric: loss}}\n"
    "checkpoint_storage: {{save_trial_latest: 100}}\n"
)


def unique(prefix: str = "model") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sessions_of(admin: Any) -> sessionmaker[Session]:
    return admin.app_ref.state.sessions  # type: ignore[no-any-return]


def problem(response: Any, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    for fragment in fragments:
        assert fragment in body["detail"], body
    return body


def experiment(admin: Any, config: str | None = None) -> dict[str, Any]:
    response = admin.post("/api/v1/experiments", json={"config": config or CONFIG.format(name=unique("exp"))})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def run(admin: Any) -> RunningTrial:
    return start_trial(sessions_of(admin), experiment(admin)["id"])


def set_checkpoint_state(admin: Any, checkpoint_uuid: str, state: str) -> None:
    with sessions_of(admin).begin() as session:
        session.execute(
            update(Checkpoint).where(Checkpoint.uuid == uuid.UUID(checkpoint_uuid)).values(state=state)
        )


def test_create_list_describe_and_patch_a_model(admin: Any) -> None:
    name, label = unique(), unique("label")
    body = {"name": name, "description": "a classifier", "labels": [label, "x"], "metadata": {"a": 1, "b": 2}}
    created = admin.post("/api/v1/models", json=body)
    assert created.status_code == 201, created.text
    model = created.json()
    assert (model["name"], model["description"], model["labels"], model["metadata"]) == (
        name,
        "a classifier",
        [label, "x"],
        {"a": 1, "b": 2},
    )
    assert (model["owner"], model["num_versions"], model["latest_version"]) == ("admin", 0, None)

    problem(admin.post("/api/v1/models", json={"name": name}), 409, name, "already exists")

    other = unique()
    assert admin.post("/api/v1/models", json={"name": other, "labels": [label]}).status_code == 201
    page = admin.get("/api/v1/models", params={"label": label}).json()
    assert [m["name"] for m in page["items"]] == sorted([name, other]) and page["total"] == 2
    first = admin.get("/api/v1/models", params={"label": label, "limit": 1, "offset": 1}).json()
    assert (first["total"], first["limit"], first["offset"]) == (2, 1, 1)
    assert [m["name"] for m in first["items"]] == [sorted([name, other])[1]]
    by_name = admin.get("/api/v1/models", params={"name": name.upper()}).json()
    assert [m["name"] for m in by_name["items"]] == [name]
    newest = admin.get("/api/v1/models", params={"label": label, "order_by": "created_at", "order": "desc"})
    assert [m["name"] for m in newest.json()["items"]] == [other, name]

    assert admin.get(f"/api/v1/models/{name}").json() == model
    patched = admin.patch(
        f"/api/v1/models/{name}",
        json={"description": "better", "labels": ["only"], "metadata": {"b": None, "c": {"d": 3}}},
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["description"], patched.json()["labels"], patched.json()["metadata"]) == (
        "better",
        ["only"],
        {"a": 1, "c": {"d": 3}},
    )
    # An empty patch changes nothing; an unknown model is a 404 everywhere.
    assert admin.patch(f"/api/v1/models/{name}", json={}).json()["metadata"] == {"a": 1, "c": {"d": 3}}
    missing = unique("missing")
    problem(admin.get(f"/api/v1/models/{missing}"), 404, missing)
    problem(admin.patch(f"/api/v1/models/{missing}", json={"description": "x"}), 404, missing)
    problem(admin.get(f"/api/v1/models/{missing}/versions"), 404, missing)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "at least 1"),
        ("a/b", "'/'"),
        ("   ", "blank"),
        ("x" * 256, "255"),
        ("tab\there", "control"),
    ],
)
def test_a_bad_model_name_is_refused_with_422(admin: Any, name: str, message: str) -> None:
    body = problem(admin.post("/api/v1/models", json={"name": name}), 422, message)
    assert [e["path"] for e in body["errors"]] == ["body.name"]


def test_a_name_with_spaces_and_symbols_works_in_urls(admin: Any, run: RunningTrial) -> None:
    name = f"my model #{uuid.uuid4().hex[:6]} ?%"
    assert admin.post("/api/v1/models", json={"name": name}).status_code == 201
    quoted = name.replace("%", "%25").replace("#", "%23").replace("?", "%3F").replace(" ", "%20")
    assert admin.get(f"/api/v1/models/{quoted}").json()["name"] == name
    ckpt = report_checkpoint(admin, run, steps=1)
    version = admin.post(f"/api/v1/models/{quoted}/versions", json={"checkpoint_uuid": ckpt})
    assert version.status_code == 201 and version.json()["model"] == name


def test_versions_are_numbered_per_model_and_name_their_checkpoint(admin: Any, run: RunningTrial) -> None:
    first, second = (report_checkpoint(admin, run, steps=s) for s in (10, 20))
    name, other = unique(), unique()
    for n in (name, other):
        assert admin.post("/api/v1/models", json={"name": n}).status_code == 201

    v1 = admin.post(
        f"/api/v1/models/{name}/versions",
        json={"checkpoint_uuid": first, "comment": "first", "labels": ["l"], "metadata": {"acc": 0.9}},
    )
    assert v1.status_code == 201, v1.text
    body = v1.json()
    assert (body["model"], body["version"], body["checkpoint_uuid"], body["trial_id"]) == (
        name,
        1,
        first,
        run.trial_id,
    )
    assert (body["comment"], body["labels"], body["metadata"], body["owner"]) == (
        "first",
        ["l"],
        {"acc": 0.9},
        "admin",
    )
    assert body["experiment_id"] is not None
    v2 = admin.post(f"/api/v1/models/{name}/versions", json={"checkpoint_uuid": second}).json()
    assert v2["version"] == 2
    # The same checkpoint may be registered under another model, whose numbering starts at 1.
    assert (
        admin.post(f"/api/v1/models/{other}/versions", json={"checkpoint_uuid": first}).json()["version"] == 1
    )

    listed = admin.get(f"/api/v1/models/{name}/versions").json()
    assert [(v["version"], v["checkpoint_uuid"]) for v in listed["items"]] == [(1, first), (2, second)]
    assert listed["total"] == 2
    paged = admin.get(f"/api/v1/models/{name}/versions", params={"limit": 1, "offset": 1}).json()
    assert [v["version"] for v in paged["items"]] == [2] and paged["total"] == 2
    assert admin.get(f"/api/v1/models/{name}/versions/1").json() == body
    problem(admin.get(f"/api/v1/models/{name}/versions/3"), 404, "no version 3")
    described = admin.get(f"/api/v1/models/{name}").json()
    assert (described["num_versions"], described["latest_version"]) == (2, 2)

    with sessions_of(admin)() as session:
        protecting = models_service.versions_protecting(session, [uuid.UUID(first), uuid.UUID(second)])
    assert protecting == {
        uuid.UUID(first): sorted([f"{name}:1", f"{other}:1"]),
        uuid.UUID(second): [f"{name}:2"],
    }
    shown = admin.get(f"/api/v1/checkpoints/{first}").json()
    assert shown["model_versions"] == sorted([f"{name}:1", f"{other}:1"])
    lineage = admin.get(f"/api/v1/checkpoints/{second}/lineage").json()
    assert lineage["checkpoint"]["model_versions"] == [f"{name}:2"]


def test_only_a_known_completed_checkpoint_can_be_registered(admin: Any, run: RunningTrial) -> None:
    name = unique()
    assert admin.post("/api/v1/models", json={"name": name}).status_code == 201
    missing = str(uuid.uuid4())
    problem(admin.post(f"/api/v1/models/{name}/versions", json={"checkpoint_uuid": missing}), 404, missing)
    for state in ("DELETED", "CORRUPTED"):
        ckpt = report_checkpoint(admin, run, steps=5)
        set_checkpoint_state(admin, ckpt, state)
        response = admin.post(f"/api/v1/models/{name}/versions", json={"checkpoint_uuid": ckpt})
        problem(response, 409, ckpt, state, "COMPLETED")
    ckpt = report_checkpoint(admin, run, steps=6)
    nobody = unique("nobody")
    problem(admin.post(f"/api/v1/models/{nobody}/versions", json={"checkpoint_uuid": ckpt}), 404, nobody)
    response = admin.post(f"/api/v1/models/{name}/versions", json={"checkpoint_uuid": "not-a-uuid"})
    assert problem(response, 422)["errors"][0]["path"] == "body.checkpoint_uuid"
    assert admin.get(f"/api/v1/models/{name}").json()["num_versions"] == 0


def test_concurrent_registrations_get_distinct_versions(admin: Any, run: RunningTrial) -> None:
    name = unique()
    assert admin.post("/api/v1/models", json={"name": name}).status_code == 201
    ckpt = uuid.UUID(report_checkpoint(admin, run, steps=1))
    sessions = sessions_of(admin)
    workers = 8
    barrier = threading.Barrier(workers)
    numbers: list[int] = []
    errors: list[BaseException] = []

    def register() -> None:
        try:
            with sessions() as session:
                actor = session.query(User).filter_by(username="admin").one()
                barrier.wait(timeout=30)
                version = models_service.register_version(session, actor, name, ckpt)
                session.commit()
                numbers.append(version.version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and sorted(numbers) == list(range(1, workers + 1))
    listed = admin.get(f"/api/v1/models/{name}/versions").json()
    assert [v["version"] for v in listed["items"]] == list(range(1, workers + 1))


def test_an_experiment_with_a_registered_checkpoint_cannot_be_deleted(admin: Any) -> None:
    exp = experiment(admin)
    run = start_trial(sessions_of(admin), exp["id"])
    ckpt = report_checkpoint(admin, run, steps=3)
    name = unique()
    assert admin.post("/api/v1/models", json={"name": name}).status_code == 201
    assert admin.post(f"/api/v1/models/{name}/versions", json={"checkpoint_uuid": ckpt}).status_code == 201
    with sessions_of(admin).begin() as session:
        session.execute(update(Experiment).where(Experiment.id == exp["id"]).values(state="COMPLETED"))
    problem(admin.delete(f"/api/v1/experiments/{exp['id']}"), 409, f"{name}:1", "cannot be deleted")
    assert admin.get(f"/api/v1/experiments/{exp['id']}").json()["state"] == "COMPLETED"


def test_only_the_owner_or_an_admin_edits_a_model(admin: Any) -> None:
    name = unique()
    assert admin.post("/api/v1/models", json={"name": name}).status_code == 201
    user = unique("user")
    assert (
        admin.post("/api/v1/users", json={"username": user, "password": "long enough pw"}).status_code == 201
    )
    token = admin.post("/api/v1/auth/login", json={"username": user, "password": "long enough pw"}).json()[
        "token"
    ]
    headers = {"Authorization": f"Bearer {token}"}
    problem(admin.patch(f"/api/v1/models/{name}", json={"description": "x"}, headers=headers), 403, name)
    # Reading and registering are open to every user, as in Determined's default workspace.
    assert admin.get(f"/api/v1/models/{name}", headers=headers).status_code == 200
