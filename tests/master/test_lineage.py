"""Warm starts and checkpoint lineage: trials start from a source checkpoint, and every checkpoint
can be traced back through the runs, trials and experiments that led to it."""

from __future__ import annotations

import io
import tarfile
import uuid
from typing import Any

import pytest
from registry_support import RunningTrial, report_checkpoint, restored_from, start_trial
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from stalwart_master.db.orm import Allocation, Checkpoint, Trial
from stalwart_master.services import allocations as allocations_service

pytestmark = pytest.mark.integration


def sessions_of(admin: Any) -> sessionmaker[Session]:
    return admin.app_ref.state.sessions  # type: ignore[no-any-return]


def config(searcher: str = "", *, lr: float = 0.1, extra: str = "", random: bool = False) -> str:
    kind = "random, max_trials: 2, max_concurrent_trials: 1" if random else "single"
    hparams = "{lr: {type: double, minval: 0.01, maxval: 0.1}}" if random else f"{{lr: {lr}}}"
    return (
        f"name: lineage-{uuid.uuid4().hex[:8]}\nentrypoint: python3 train.py\nhyperparameters: {hparams}\n"
        f"searcher: {{name: {kind}, metric: loss{', ' + searcher if searcher else ''}}}\n{extra}"
    )


def create(admin: Any, text: str, context: str | None = None) -> dict[str, Any]:
    response = admin.post("/api/v1/experiments", json={"config": text, "context": context})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def trials(admin: Any, experiment_id: int) -> list[dict[str, Any]]:
    return admin.get(f"/api/v1/experiments/{experiment_id}/trials").json()  # type: ignore[no-any-return]


def upload_context(admin: Any) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = f"print({uuid.uuid4().hex!r})\n".encode()
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    response = admin.post(
        "/api/v1/contexts", content=buffer.getvalue(), headers={"Content-Type": "application/gzip"}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["sha256"])


def refused(admin: Any, text: str, path: str, *fragments: str) -> None:
    before = admin.get("/api/v1/experiments", params={"limit": 1}).json()["total"]
    response = admin.post("/api/v1/experiments", json={"config": text})
    assert response.status_code == 422, response.text
    body = response.json()
    assert [e["path"] for e in body["errors"]] == [path], body
    for fragment in fragments:
        assert fragment in body["detail"], body
    assert admin.get("/api/v1/experiments", params={"limit": 1}).json()["total"] == before


def finish(admin: Any, run: RunningTrial) -> None:
    """The run exits 0: its trial completes and the searcher may create the next one."""
    with sessions_of(admin).begin() as session:
        allocation = session.get(Allocation, run.allocation_id, with_for_update=True)
        assert allocation is not None
        allocations_service.finish_allocation(session, allocation, 0, "exited")


def test_lineage_follows_warm_starts_across_three_experiments(admin: Any) -> None:
    sessions = sessions_of(admin)
    digest = upload_context(admin)
    exp_a = create(admin, config(lr=0.1), context=digest)
    run_a = start_trial(sessions, exp_a["id"])
    a1 = report_checkpoint(admin, run_a, steps=10)
    a2 = report_checkpoint(admin, run_a, steps=20, parent=a1)  # a later run that restored a1

    secret = "s3cr3t-" + uuid.uuid4().hex
    storage = f"checkpoint_storage: {{type: s3, bucket: b, access_key: AK, secret_key: {secret}}}\n"
    exp_b = create(admin, config(f"source_trial_id: {run_a.trial_id}", lr=0.2, extra=storage))
    [trial_b] = trials(admin, exp_b["id"])
    assert (trial_b["warm_start_checkpoint"], trial_b["latest_checkpoint"]) == (a2, None)
    run_b = start_trial(sessions, exp_b["id"])
    assert restored_from(admin, run_b) == a2  # the trial runner restores the warm-start checkpoint
    b1 = report_checkpoint(admin, run_b, steps=5, parent=a2)
    assert restored_from(admin, run_b) == b1  # once it has its own, that one wins

    exp_c = create(admin, config(f"source_checkpoint_uuid: {b1}", lr=0.3))
    run_c = start_trial(sessions, exp_c["id"])
    assert restored_from(admin, run_c) == b1
    c1 = report_checkpoint(admin, run_c, steps=7, parent=b1)

    response = admin.get(f"/api/v1/checkpoints/{c1}/lineage")
    assert response.status_code == 200, response.text
    lineage = response.json()
    assert lineage["checkpoint"]["uuid"] == c1 and lineage["checkpoint"]["experiment_id"] == exp_c["id"]
    assert [c["uuid"] for c in lineage["chain"]] == [b1, a2, a1]
    assert [c["experiment_id"] for c in lineage["chain"]] == [exp_b["id"], exp_a["id"], exp_a["id"]]
    assert [c["steps_completed"] for c in lineage["chain"]] == [5, 20, 10]
    assert lineage["missing_parent"] is None

    experiments = {e["id"]: e for e in lineage["experiments"]}
    assert [e["id"] for e in lineage["experiments"]] == [exp_c["id"], exp_b["id"], exp_a["id"]]
    assert experiments[exp_a["id"]]["context_sha256"] == digest
    assert experiments[exp_b["id"]]["context_sha256"] is None
    assert experiments[exp_b["id"]]["config"]["searcher"]["source_trial_id"] == run_a.trial_id
    assert experiments[exp_c["id"]]["config"]["searcher"]["source_checkpoint_uuid"] == b1
    assert experiments[exp_b["id"]]["config"]["checkpoint_storage"]["secret_key"] == "********"
    assert secret not in response.text
    assert experiments[exp_a["id"]]["name"] == exp_a["name"]

    assert [(t["id"], t["experiment_id"]) for t in lineage["trials"]] == [
        (run_c.trial_id, exp_c["id"]),
        (run_b.trial_id, exp_b["id"]),
        (run_a.trial_id, exp_a["id"]),
    ]
    assert [t["hparams"] for t in lineage["trials"]] == [{"lr": 0.3}, {"lr": 0.2}, {"lr": 0.1}]
    assert [t["warm_start_checkpoint"] for t in lineage["trials"]] == [b1, a2, None]

    root = admin.get(f"/api/v1/checkpoints/{a1}/lineage").json()
    assert root["chain"] == [] and [e["id"] for e in root["experiments"]] == [exp_a["id"]]


def test_lineage_survives_cycles_and_a_forgotten_parent(admin: Any) -> None:
    run = start_trial(sessions_of(admin), create(admin, config())["id"])
    x = report_checkpoint(admin, run, steps=1)
    y = report_checkpoint(admin, run, steps=2, parent=x)
    with sessions_of(admin).begin() as session:  # a corrupt history: x claims y as its parent
        session.execute(
            update(Checkpoint).where(Checkpoint.uuid == uuid.UUID(x)).values(parent_uuid=uuid.UUID(y))
        )
    lineage = admin.get(f"/api/v1/checkpoints/{y}/lineage").json()
    assert [c["uuid"] for c in lineage["chain"]] == [x] and lineage["missing_parent"] is None

    gone = str(uuid.uuid4())
    z = report_checkpoint(admin, run, steps=3, parent=gone)
    lineage = admin.get(f"/api/v1/checkpoints/{z}/lineage").json()
    assert lineage["chain"] == [] and lineage["missing_parent"] == gone

    missing = str(uuid.uuid4())
    response = admin.get(f"/api/v1/checkpoints/{missing}/lineage")
    assert response.status_code == 404 and missing in response.json()["detail"]


def test_an_unusable_warm_start_source_refuses_the_experiment(admin: Any) -> None:
    unknown = str(uuid.uuid4())
    refused(admin, config(f"source_checkpoint_uuid: {unknown}"), "searcher.source_checkpoint_uuid", unknown)
    refused(admin, config("source_trial_id: 2000000000"), "searcher.source_trial_id", "2000000000 not found")

    exp = create(admin, config())
    run = start_trial(sessions_of(admin), exp["id"])
    refused(admin, config(f"source_trial_id: {run.trial_id}"), "searcher.source_trial_id", "no completed")

    ckpt = report_checkpoint(admin, run, steps=4)
    with sessions_of(admin).begin() as session:
        session.execute(
            update(Checkpoint).where(Checkpoint.uuid == uuid.UUID(ckpt)).values(state="CORRUPTED")
        )
    refused(admin, config(f"source_checkpoint_uuid: {ckpt}"), "searcher.source_checkpoint_uuid", "CORRUPTED")
    refused(admin, config(f"source_trial_id: {run.trial_id}"), "searcher.source_trial_id", "no completed")


def test_a_lost_latest_checkpoint_falls_back_to_the_newest_completed_one(admin: Any) -> None:
    run = start_trial(sessions_of(admin), create(admin, config())["id"])
    older = report_checkpoint(admin, run, steps=1)
    newest = report_checkpoint(admin, run, steps=2)
    with sessions_of(admin).begin() as session:
        session.execute(
            update(Checkpoint).where(Checkpoint.uuid == uuid.UUID(newest)).values(state="CORRUPTED")
        )
    exp = create(admin, config(f"source_trial_id: {run.trial_id}"))
    assert trials(admin, exp["id"])[0]["warm_start_checkpoint"] == older


def test_later_trials_start_from_the_same_checkpoint_as_the_first(admin: Any) -> None:
    sessions = sessions_of(admin)
    source = start_trial(sessions, create(admin, config())["id"])
    first_ckpt = report_checkpoint(admin, source, steps=10)
    exp = create(admin, config(f"source_trial_id: {source.trial_id}", random=True))
    [first] = trials(admin, exp["id"])
    assert first["warm_start_checkpoint"] == first_ckpt

    report_checkpoint(admin, source, steps=20)  # the source trial moves on meanwhile
    finish(admin, start_trial(sessions, exp["id"]))
    later = trials(admin, exp["id"])
    assert len(later) == 2 and [t["warm_start_checkpoint"] for t in later] == [first_ckpt, first_ckpt]
    with sessions() as session:
        stored = session.scalars(select(Trial.warm_start_checkpoint).where(Trial.experiment_id == exp["id"]))
        assert {str(u) for u in stored} == {first_ckpt}


def test_a_trial_without_warm_start_restores_nothing_until_it_checkpoints(admin: Any) -> None:
    run = start_trial(sessions_of(admin), create(admin, config())["id"])
    assert restored_from(admin, run) is None
    assert admin.get(f"/api/v1/trials/{run.trial_id}").json()["warm_start_checkpoint"] is None
    ckpt = report_checkpoint(admin, run, steps=1)
    assert restored_from(admin, run) == ckpt
