"""Checkpoints without storage, for registry and lineage tests: a running trial's allocation token is
made the way the scheduler and agent make it, and checkpoints are reported as the harness reports them.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from stalwart_master.db.orm import Allocation, Experiment, Token, Trial, User
from stalwart_master.services import storage as storage_service
from stalwart_master.services.users import hash_token, issue_token


class Poster(Protocol):
    def post(self, url: str, **kwargs: Any) -> Any: ...

    def get(self, url: str, **kwargs: Any) -> Any: ...


class RunningTrial:
    """A trial with a RUNNING allocation and that allocation's token."""

    def __init__(
        self, trial_id: int, allocation_id: uuid.UUID, token: str, storage: dict[str, Any] | None = None
    ) -> None:
        self.trial_id = trial_id
        self.allocation_id = allocation_id
        self.token = token
        # The checkpoint_storage its trial info carries: the only storage a registration may name.
        self.storage = storage or {}

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def start_trial(sessions: sessionmaker[Session], experiment_id: int) -> RunningTrial:
    """The experiment's first trial, with a fresh RUNNING allocation in a pool no agent serves."""
    with sessions.begin() as session:
        trial = session.scalars(
            select(Trial).where(Trial.experiment_id == experiment_id).order_by(Trial.id)
        ).first()
        assert trial is not None, f"experiment {experiment_id} has no trial"
        trial.run_id += 1
        allocation = Allocation(
            trial_id=trial.id,
            run_id=trial.run_id,
            resource_pool="nowhere",
            slots_needed=1,
            priority=42,
            state="RUNNING",
        )
        session.add(allocation)
        session.flush()
        owner = session.scalars(select(User).where(User.username == "admin")).one()
        secret = issue_token(session, owner, 1, kind="allocation")
        session.execute(
            update(Token).where(Token.token_hash == hash_token(secret)).values(allocation_id=allocation.id)
        )
        experiment = session.get(Experiment, trial.experiment_id)
        assert experiment is not None
        storage = storage_service.experiment_storage(experiment.config)
        return RunningTrial(trial.id, allocation.id, secret, storage)


def manifest(checkpoint_uuid: str, steps: int, parent: str | None) -> dict[str, Any]:
    """A one-file manifest in the chunk-store format, also carrying the per-file sha256 of before."""
    data = f"{checkpoint_uuid}:{steps}".encode()
    digest = hashlib.sha256(data).hexdigest()
    return {
        "format": "stalwart-checkpoint/1",
        "uuid": checkpoint_uuid,
        "steps_completed": steps,
        "metadata": {"steps_completed": steps},
        "parent_uuid": parent,
        "digest": "blake3",
        "compression": None,
        "chunk_size": 8388608,
        "created_at": "2026-01-01T00:00:00Z",
        "kind": "directory",
        "world_size": 1,
        "files": [
            {
                "path": "model.pt",
                "size": len(data),
                "rank": 0,
                "type": "file",
                "sha256": digest,
                "chunks": [{"digest": digest, "size": len(data), "stored": len(data)}],
            }
        ],
        "size": len(data),
        "stored_size": len(data),
        "new_bytes": len(data),
    }


def report_checkpoint(http: Poster, run: RunningTrial, *, steps: int, parent: str | None = None) -> str:
    """Register a checkpoint as the harness does after committing its manifest; returns its uuid."""
    checkpoint_uuid = str(uuid.uuid4())
    body = {
        "uuid": checkpoint_uuid,
        "trial_id": run.trial_id,
        "allocation_id": str(run.allocation_id),
        "steps_completed": steps,
        "storage": run.storage,
        "manifest": manifest(checkpoint_uuid, steps, parent),
        "metadata": {"steps_completed": steps},
        "parent_uuid": parent,
    }
    response = http.post("/api/v1/checkpoints", json=body, headers=run.headers)
    assert response.status_code == 201, response.text
    return checkpoint_uuid


def restored_from(http: Poster, run: RunningTrial) -> str | None:
    """What the trial runner would restore: ``latest_checkpoint`` of the allocation's info."""
    response = http.get(f"/api/v1/allocations/{run.allocation_id}/info", headers=run.headers)
    assert response.status_code == 200, response.text
    value = response.json()["latest_checkpoint"]
    return None if value is None else str(value)
