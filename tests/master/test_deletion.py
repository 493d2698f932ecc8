"""Deleting an experiment is finished by a real Celery worker against the real master."""

from __future__ import annotations

import io
import tarfile
import uuid

import httpx
import pytest

from support import wait_for

pytestmark = pytest.mark.integration
CONFIG = "entrypoint: python3 train.py\nsearcher: {name: single, metric: loss}\n"


@pytest.fixture
def api(live_master):  # type: ignore[no-untyped-def]
    token = httpx.post(
        f"{live_master.url}/api/v1/auth/login",
        json={"username": live_master.admin_username, "password": live_master.admin_password},
    ).json()["token"]
    with httpx.Client(
        base_url=live_master.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        yield client


def _context(api: httpx.Client) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = uuid.uuid4().bytes
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    response = api.post(
        "/api/v1/contexts", content=buffer.getvalue(), headers={"Content-Type": "application/gzip"}
    )
    assert response.status_code == 201
    return str(response.json()["sha256"])


def _ended_experiment(api: httpx.Client, context: str) -> int:
    experiment = api.post("/api/v1/experiments", json={"config": CONFIG, "context": context}).json()
    assert api.post(f"/api/v1/experiments/{experiment['id']}/cancel").json()["state"] == "CANCELED"
    return int(experiment["id"])


def test_delete_removes_the_experiment_and_its_unshared_context(api: httpx.Client) -> None:
    context = _context(api)
    experiment_id = _ended_experiment(api, context)
    accepted = api.delete(f"/api/v1/experiments/{experiment_id}")
    assert accepted.status_code == 202 and accepted.json()["state"] == "DELETING"
    wait_for(
        lambda: api.get(f"/api/v1/experiments/{experiment_id}").status_code == 404, 30, "the deletion job"
    )
    assert api.head(f"/api/v1/contexts/{context}").status_code == 404


def test_a_context_still_used_by_another_experiment_is_kept(api: httpx.Client) -> None:
    context = _context(api)
    first = _ended_experiment(api, context)
    second = _ended_experiment(api, context)
    assert api.delete(f"/api/v1/experiments/{first}").status_code == 202
    wait_for(lambda: api.get(f"/api/v1/experiments/{first}").status_code == 404, 30, "the deletion job")
    assert api.head(f"/api/v1/contexts/{context}").status_code == 200
    assert api.get(f"/api/v1/experiments/{second}").json()["context_sha256"] == context


def test_active_experiments_cannot_be_deleted(api: httpx.Client) -> None:
    experiment = api.post("/api/v1/experiments", json={"config": CONFIG}).json()
    refused = api.delete(f"/api/v1/experiments/{experiment['id']}")
    assert refused.status_code == 409
    assert api.get(f"/api/v1/experiments/{experiment['id']}").json()["state"] == "ACTIVE"
