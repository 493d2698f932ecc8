"""Experiments over HTTP: create, list, get, patch and the lifecycle state machine."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from stalwart_master.db.orm import Allocation, Experiment, Trial
from stalwart_master.services.states import SETTLES_TO, STOPPING, TRANSITIONS, ExperimentState

pytestmark = pytest.mark.integration

CONFIG = """
name: {name}
labels: [{labels}]
entrypoint: python3 train.py
hyperparameters:
  lr: 0.01
searcher:
  name: single
  metric: validation_loss
"""


def make_config(name: str | None = None, labels: str = "") -> str:
    return CONFIG.format(name=name or f"exp-{uuid.uuid4().hex[:8]}", labels=labels)


def create(client, config: str | None = None, **body: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/experiments", json={"config": config or make_config(), **body})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def set_state(client, experiment_id: int, state: str) -> None:  # type: ignore[no-untyped-def]
    """Put an experiment straight into a state; a stopping one gets a run still going, as it would
    in life, so the scheduler does not settle it before the verb under test arrives."""
    with client.app_ref.state.sessions.begin() as session:
        session.execute(update(Experiment).where(Experiment.id == experiment_id).values(state=state))
        if ExperimentState(state) in STOPPING:
            trial = session.scalars(select(Trial).where(Trial.experiment_id == experiment_id)).first()
            session.execute(
                update(Allocation).where(Allocation.trial_id == trial.id).values(state="TERMINATED")
            )
            session.add(
                Allocation(
                    trial_id=trial.id,
                    run_id=99,
                    resource_pool="default",
                    slots_needed=1,
                    priority=42,
                    state="RUNNING",
                )
            )


def test_create_fills_defaults_and_keeps_the_original_yaml(admin) -> None:  # type: ignore[no-untyped-def]
    config = make_config(name="defaults-check")
    created = create(admin, config)
    assert created["state"] == "ACTIVE"
    assert created["owner"] == "admin"
    assert created["original_config"] == config
    assert created["config"]["max_restarts"] == 5
    assert created["config"]["checkpoint_storage"]["type"] == "shared_fs"  # the cluster default
    assert isinstance(created["config"]["reproducibility"]["experiment_seed"], int)
    fetched = admin.get(f"/api/v1/experiments/{created['id']}")
    assert fetched.status_code == 200 and fetched.json()["original_config"] == config


def test_create_paused_and_unnamed(admin) -> None:  # type: ignore[no-untyped-def]
    config = make_config().replace("name: ", "description: ", 1)
    created = create(admin, config, paused=True)
    assert created["state"] == "PAUSED"
    assert created["name"] == f"Experiment {created['id']}"


def test_get_missing_is_a_problem_404(admin) -> None:  # type: ignore[no-untyped-def]
    response = admin.get("/api/v1/experiments/999999")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:stalwart:problem:not-found"
    assert admin.get("/api/v1/experiments/abc").status_code == 422
    assert admin.get("/api/v1/nothing-here").status_code == 404


def test_list_filters_sorts_and_paginates(admin) -> None:  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:8]
    ids = [
        create(admin, make_config(name=f"{tag}-run-{i}", labels=f"{tag}, n{i % 2}"))["id"] for i in range(5)
    ]
    admin.post(f"/api/v1/experiments/{ids[0]}/pause")

    page = admin.get("/api/v1/experiments", params={"label": tag, "limit": 2, "order": "asc"}).json()
    assert page["total"] == 5 and page["limit"] == 2 and [e["id"] for e in page["items"]] == ids[:2]
    page2 = admin.get(
        "/api/v1/experiments", params={"label": tag, "limit": 2, "offset": 2, "order": "asc"}
    ).json()
    assert [e["id"] for e in page2["items"]] == ids[2:4]

    both = admin.get("/api/v1/experiments", params=[("label", tag), ("label", "n1")]).json()
    assert sorted(e["id"] for e in both["items"]) == [ids[1], ids[3]]
    paused = admin.get("/api/v1/experiments", params={"label": tag, "state": "PAUSED"}).json()
    assert [e["id"] for e in paused["items"]] == [ids[0]]
    by_name = admin.get("/api/v1/experiments", params={"name": f"{tag.upper()}-RUN-4"}).json()
    assert [e["id"] for e in by_name["items"]] == [ids[4]]
    by_owner = admin.get("/api/v1/experiments", params={"label": tag, "owner": "admin"}).json()
    assert by_owner["total"] == 5
    assert admin.get("/api/v1/experiments", params={"label": tag, "owner": "nobody"}).json()["total"] == 0
    named = admin.get(
        "/api/v1/experiments", params={"label": tag, "order_by": "name", "order": "desc"}
    ).json()
    assert [e["name"] for e in named["items"]] == sorted((e["name"] for e in named["items"]), reverse=True)


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"limit": 5000}, "query.limit"),
        ({"limit": 0}, "query.limit"),
        ({"offset": -1}, "query.offset"),
        ({"state": "RUNNING_FAST"}, "query.state.0"),
        ({"order_by": "password"}, "query.order_by"),
        ({"archived": "maybe"}, "query.archived"),
    ],
)
def test_list_rejects_bad_queries_with_the_field_path(admin, params, path) -> None:  # type: ignore[no-untyped-def]
    response = admin.get("/api/v1/experiments", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["path"] for e in response.json()["errors"]] == [path]


def test_patch_name_description_labels(admin) -> None:  # type: ignore[no-untyped-def]
    experiment = create(admin)
    response = admin.patch(
        f"/api/v1/experiments/{experiment['id']}",
        json={"name": "renamed", "description": "why it exists", "labels": ["a", "b", "a"]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["description"], body["labels"]) == ("renamed", "why it exists", ["a", "b"])
    assert body["config"]["name"] == "renamed" and body["config"]["labels"] == ["a", "b"]

    for bad, path in [
        ({"name": ""}, "body.name"),
        ({"labels": [" "]}, "body.labels"),
        ({"owner": "x"}, "body.owner"),
    ]:
        refused = admin.patch(f"/api/v1/experiments/{experiment['id']}", json=bad)
        assert refused.status_code == 422, bad
        assert refused.json()["errors"][0]["path"] == path
    assert admin.get(f"/api/v1/experiments/{experiment['id']}").json()["name"] == "renamed"


ALL_STATES = [s for s in ExperimentState if s != ExperimentState.DELETING]


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.value)
def test_every_verb_from_every_state_follows_the_state_machine(admin, state: ExperimentState) -> None:  # type: ignore[no-untyped-def]
    for verb, table in TRANSITIONS.items():
        experiment = create(admin)
        set_state(admin, experiment["id"], state.value)
        if verb == "delete":
            response = admin.delete(f"/api/v1/experiments/{experiment['id']}")
        else:
            response = admin.post(f"/api/v1/experiments/{experiment['id']}/{verb}")
        if state in table:
            assert response.status_code in (200, 202), f"{verb} from {state}: {response.text}"
            target = table[state]
            expected = target if state in STOPPING else SETTLES_TO.get(target, target)
            assert response.json()["state"] == expected.value
            if verb in ("archive", "unarchive"):
                assert response.json()["archived"] is (verb == "archive")
        else:
            assert response.status_code == 409, f"{verb} from {state} should be refused: {response.text}"
            body = response.json()
            assert body["type"] == "urn:stalwart:problem:invalid-transition"
            assert state.value in body["detail"]
            unchanged = admin.get(f"/api/v1/experiments/{experiment['id']}").json()
            assert unchanged["state"] == state.value and unchanged["archived"] is False


def test_cancel_settles_to_canceled_with_an_end_time(admin) -> None:  # type: ignore[no-untyped-def]
    experiment = create(admin)
    response = admin.post(f"/api/v1/experiments/{experiment['id']}/cancel")
    assert response.json()["state"] == "CANCELED"
    assert response.json()["ended_at"] is not None


def test_a_deleting_experiment_cannot_be_edited(admin) -> None:  # type: ignore[no-untyped-def]
    experiment = create(admin)
    set_state(admin, experiment["id"], "DELETING")
    assert admin.patch(f"/api/v1/experiments/{experiment['id']}", json={"name": "x"}).status_code == 409
    assert admin.post(f"/api/v1/experiments/{experiment['id']}/pause").status_code == 409


def test_only_the_owner_or_an_admin_changes_an_experiment(admin) -> None:  # type: ignore[no-untyped-def]
    name = f"user-{uuid.uuid4().hex[:8]}"
    assert (
        admin.post("/api/v1/users", json={"username": name, "password": "a-good-password"}).status_code == 201
    )
    token = admin.post("/api/v1/auth/login", json={"username": name, "password": "a-good-password"}).json()[
        "token"
    ]
    as_user = {"Authorization": f"Bearer {token}"}
    theirs = create(admin)
    assert admin.post(f"/api/v1/experiments/{theirs['id']}/pause", headers=as_user).status_code == 403
    assert (
        admin.patch(f"/api/v1/experiments/{theirs['id']}", json={"name": "x"}, headers=as_user).status_code
        == 403
    )
    assert admin.get(f"/api/v1/experiments/{theirs['id']}").json()["state"] == "ACTIVE"
    mine = admin.post("/api/v1/experiments", json={"config": make_config()}, headers=as_user).json()
    assert mine["owner"] == name
    assert admin.post(f"/api/v1/experiments/{mine['id']}/pause", headers=as_user).status_code == 200
    assert admin.post(f"/api/v1/experiments/{mine['id']}/activate").status_code == 200  # admin may


def test_create_refuses_unknown_context_and_parent(admin) -> None:  # type: ignore[no-untyped-def]
    missing = admin.post("/api/v1/experiments", json={"config": make_config(), "context": "b" * 64})
    assert missing.status_code == 404
    orphan = admin.post("/api/v1/experiments", json={"config": make_config(), "parent_id": 999999})
    assert orphan.status_code == 404
    malformed = admin.post("/api/v1/experiments", json={"config": make_config(), "context": "nope"})
    assert malformed.status_code == 422 and malformed.json()["errors"][0]["path"] == "body.context"
    not_json = admin.post("/api/v1/experiments", content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422


def test_fork_records_its_parent(admin) -> None:  # type: ignore[no-untyped-def]
    parent = create(admin)
    child = create(admin, parent_id=parent["id"])
    assert child["parent_id"] == parent["id"]


def test_storage_secrets_are_masked_in_answers(admin) -> None:  # type: ignore[no-untyped-def]
    config = (
        make_config()
        + "checkpoint_storage:\n  type: s3\n  bucket: b\n  access_key: AK\n  secret_key: s3cr3t\n"
    )
    created = create(admin, config)
    storage = created["config"]["checkpoint_storage"]
    # Both halves of the key pair, as Determined masks them; the bucket stays readable.
    assert storage["secret_key"] == storage["access_key"] == "********" and storage["bucket"] == "b"
    assert "s3cr3t" not in created["original_config"] and "secret_key:" in created["original_config"]
    listed = admin.get("/api/v1/experiments", params={"limit": 1}).json()["items"][0]
    assert "s3cr3t" not in str(listed["config"])


@pytest.mark.parametrize("verb", ["pause", "cancel", "kill"])
def test_stopping_gives_back_slots_of_runs_no_agent_has_started(admin, verb: str) -> None:  # type: ignore[no-untyped-def]
    from stalwart_master.db.orm import Agent, AllocationSlot, Slot

    experiment = create(admin)
    agent_id = f"idle-{uuid.uuid4().hex[:8]}"
    with admin.app_ref.state.sessions.begin() as session:
        # Its own pool and disabled, so the scheduler leaves this hand-made agent alone.
        session.add(Agent(id=agent_id, resource_pool=agent_id, enabled=False))
        session.flush()
        slot = Slot(agent_id=agent_id, index=0, type="artificial", uuid=agent_id)
        trial = session.scalars(select(Trial).where(Trial.experiment_id == experiment["id"])).one()
        session.execute(update(Allocation).where(Allocation.trial_id == trial.id).values(state="TERMINATED"))
        allocation = Allocation(
            trial_id=trial.id, run_id=9, resource_pool=agent_id, slots_needed=1, priority=42, state="ASSIGNED"
        )
        session.add_all([slot, allocation])
        session.flush()
        session.add(AllocationSlot(allocation_id=allocation.id, slot_id=slot.id))
        allocation_id = allocation.id
    assert admin.post(f"/api/v1/experiments/{experiment['id']}/{verb}").status_code == 200
    with admin.app_ref.state.sessions() as session:
        stopped = session.get(Allocation, allocation_id)
        assert stopped is not None and stopped.state == "TERMINATED"
        held = session.scalars(
            select(AllocationSlot).where(AllocationSlot.allocation_id == allocation_id)
        ).all()
        assert [h.released for h in held] == [True]
