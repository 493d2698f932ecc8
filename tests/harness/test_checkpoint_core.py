"""``core_context.checkpoint.save_state`` / ``load_latest_state`` through the Core API: registration
after commit, the corruption report and its fallback, and errors surfacing when the context closes.

The master is httpx's MockTransport answering as the contract says, because these cases need a
master that answers 503 twice or refuses a valid manifest on demand; storage is real files. The
same paths against a real master and real trials: tests/harness/test_checkpoint_cli.py
(registration), tests/e2e/test_corrupt_checkpoint.py (the corruption report and the fallback) and
tests/chaos/test_datastores.py (real 503s and retries while PostgreSQL restarts).
"""

from __future__ import annotations

import json
import logging
import os
import uuid as uuid_lib
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

import stalwart.core
from stalwart.core import CheckpointError
from stalwart.core._checkpoint import CheckpointContext
from stalwart.core._http import AllocationSession

pytestmark = pytest.mark.unit
log = logging.getLogger("test")


class FakeMaster:
    """Keeps registered checkpoints; answers GET, registration and the corruption report."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.reports: list[tuple[str, str]] = []
        self.fail_next_registrations = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/api/v1/allocations/a-1/checkpoints":
            if self.fail_next_registrations:
                self.fail_next_registrations -= 1
                return httpx.Response(503, json={"title": "busy"})
            body = json.loads(request.content)
            if body["uuid"] in self.records:
                return httpx.Response(409, json={"title": "exists"})
            self.records[body["uuid"]] = {**body, "state": "COMPLETED"}
            return httpx.Response(201, json=body)
        if request.method == "POST" and path.endswith("/corrupt"):
            uuid = path.split("/")[-2]
            self.reports.append((uuid, json.loads(request.content)["reason"]))
            self.records[uuid]["state"] = "CORRUPTED"
            completed = [u for u, r in self.records.items() if r["state"] == "COMPLETED"]
            return httpx.Response(200, json={"latest_checkpoint": completed[-1] if completed else None})
        if request.method == "GET" and path.startswith("/api/v1/checkpoints/"):
            record = self.records.get(path.rsplit("/", 1)[1])
            return httpx.Response(200, json=record) if record else httpx.Response(404, json={"title": "nope"})
        return httpx.Response(404)


def _context(tmp_path: Path, master: FakeMaster, parent: str | None = None) -> CheckpointContext:
    session = AllocationSession(
        "http://master.test:8080",
        "alloc-token",
        transport=httpx.MockTransport(master),
    )
    return CheckpointContext(
        storage={"type": "shared_fs", "host_path": str(tmp_path), "storage_path": "ckpts"},
        session=session,
        trial_id=7,
        allocation_id="a-1",
        parent_uuid=parent,
        is_chief=True,
        log=log,
        register_retry_for=30,
    )


def test_save_state_registers_the_whole_manifest_after_commit_retrying_5xx(tmp_path: Path) -> None:
    master = FakeMaster()
    master.fail_next_registrations = 2
    parent = str(uuid_lib.uuid4())
    checkpoints = _context(tmp_path, master, parent)
    uuid = checkpoints.save_state({"w": torch.randn(10), "epoch": 2}, steps_completed=30, metadata={"a": 1})
    checkpoints.wait()
    body = master.records[uuid]
    assert body["trial_id"] == 7 and body["allocation_id"] == "a-1" and body["steps_completed"] == 30
    assert body["parent_uuid"] == parent and body["metadata"] == {"a": 1, "steps_completed": 30}
    manifest = body["manifest"]
    assert manifest["uuid"] == uuid and manifest["format"] == "stalwart-checkpoint/1"
    assert json.loads((tmp_path / "ckpts" / "manifests" / f"{uuid}.json").read_text()) == manifest
    second = checkpoints.save_state({"w": torch.randn(10)}, steps_completed=40)
    checkpoints.close()
    # Lineage parent = what this run restored from, for every save of the run (not the previous save).
    assert master.records[second]["parent_uuid"] == parent
    state = _context(tmp_path, master).load_state(uuid)
    assert state["epoch"] == 2


def test_a_registration_the_master_refuses_surfaces_on_the_next_call(tmp_path: Path) -> None:
    def master(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"title": "bad manifest"})

    session = AllocationSession("http://m.test", "t", transport=httpx.MockTransport(master))
    checkpoints = CheckpointContext(
        storage={"type": "directory", "container_path": str(tmp_path)},
        session=session,
        trial_id=7,
        allocation_id="a-1",
        parent_uuid=None,
        is_chief=True,
        log=log,
    )
    uuid = checkpoints.save_state({"w": torch.ones(2)}, steps_completed=1)
    with pytest.raises(CheckpointError, match=rf"{uuid} is written but the master did not register it.*422"):
        checkpoints.wait()
    checkpoints.close()


def test_load_latest_state_reports_a_corrupted_checkpoint_and_falls_back(tmp_path: Path) -> None:
    master = FakeMaster()
    checkpoints = _context(tmp_path, master)
    older = checkpoints.save_state({"w": torch.zeros(3), "step": 1}, steps_completed=1)
    newer = checkpoints.save_state({"w": torch.randn(2048), "step": 2}, steps_completed=2)
    checkpoints.wait()
    found = checkpoints.load_latest_state()
    assert found is not None and found[0] == newer and found[1]["step"] == 2

    files = master.records[newer]["manifest"]["files"]
    digest = next(e for e in files if e["path"] == "state/w")["chunks"][0]["digest"]
    (tmp_path / "ckpts" / "chunks" / digest[:2] / digest).write_bytes(b"garbage")
    # A fresh process of the same trial, told the newest checkpoint is `newer`.
    resumed = _context(tmp_path, master, parent=newer)
    found = resumed.load_latest_state(map_location="cpu")
    assert found is not None and found[0] == older and found[1]["step"] == 1
    ((reported, reason),) = master.reports
    assert reported == newer and "'state/w' chunk 0" in reason
    assert master.records[newer]["state"] == "CORRUPTED"

    (tmp_path / "ckpts" / "manifests" / f"{older}.json").unlink()  # off-cluster view: gone
    for entry in master.records[older]["manifest"]["files"]:
        for chunk in entry["chunks"]:
            (tmp_path / "ckpts" / "chunks" / chunk["digest"][:2] / chunk["digest"]).unlink(missing_ok=True)
    assert _context(tmp_path, master, parent=older).load_latest_state() is None
    checkpoints.close()
    resumed.close()


def test_off_cluster_save_and_load_latest_follow_the_parent_chain(
    off_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with stalwart.core.init() as core:
        assert core.checkpoint.load_latest_state() is None
        first = core.checkpoint.save_state({"step": 1, "w": torch.ones(3)}, steps_completed=1)
        second = core.checkpoint.save_state({"step": 2, "w": torch.ones(3) * 2}, steps_completed=2)
        found = core.checkpoint.load_latest_state()
        assert found is not None and found[0] == second
    (off_cluster / "checkpoints" / "manifests" / f"{second}.json").unlink()
    monkeypatch.setenv("STALWART_LATEST_CHECKPOINT", second)
    with stalwart.core.init() as core:
        assert core.checkpoint.load_latest_state() is None  # second is gone and names no parent
    monkeypatch.delenv("STALWART_LATEST_CHECKPOINT")
    with stalwart.core.init() as core:
        assert core.checkpoint.load_state(first)["step"] == 1
        assert core.checkpoint.get_metadata(first) == {"steps_completed": 1}


def test_closing_the_context_flushes_saves_and_raises_a_writer_failure(
    off_cluster: Path, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("x")
    storage = {"type": "directory", "container_path": str(blocked)}
    core = stalwart.core.init(checkpoint_storage=storage)
    core.checkpoint.save_state({"w": torch.ones(3)}, steps_completed=1)  # returns: the failure is later
    with pytest.raises(CheckpointError, match="cannot write"):
        core.__exit__(None, None, None)
    good = {"type": "directory", "container_path": str(tmp_path / "good")}
    with stalwart.core.init(checkpoint_storage=good) as core:
        uuid = core.checkpoint.save_state({"w": torch.ones(3)}, steps_completed=1)
    assert (tmp_path / "good" / "manifests" / f"{uuid}.json").is_file()  # committed by the exit


def test_upload_and_download_go_through_the_chunk_store(off_cluster: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)
    (source / "a" / "b.bin").write_bytes(os.urandom(5000))
    with stalwart.core.init() as core:
        uuid = core.checkpoint.upload(source, {"steps_completed": 3})
        core.checkpoint.download(uuid, tmp_path / "dst")
    assert (tmp_path / "dst" / "a" / "b.bin").read_bytes() == (source / "a" / "b.bin").read_bytes()
    assert json.loads((tmp_path / "dst" / "metadata.json").read_text()) == {"steps_completed": 3}
